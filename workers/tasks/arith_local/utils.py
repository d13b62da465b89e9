"""Offline arithmetic word problems in GSM8K's answer format ("... #### 12"), generated from a
fixed seed so every host and every run scores the same documents (no download, no data file)."""

import random

import datasets

SEED = 20241031
N_TEST, N_TRAIN = 200, 16
NAMES = ["Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Ivy"]
THINGS = ["apples", "books", "coins", "stamps", "marbles", "pencils"]


def _problem(rng: random.Random) -> dict[str, str]:
    who, what = rng.choice(NAMES), rng.choice(THINGS)
    a, b, c = rng.randint(2, 60), rng.randint(2, 40), rng.randint(2, 9)
    kind = rng.randrange(3)
    if kind == 0:
        q = f"{who} has {a} {what} and gets {b} more. How many {what} does {who} have now?"
        steps, ans = f"{who} has {a} + {b} = {a + b} {what}.", a + b
    elif kind == 1:
        a = a + b  # never negative
        q = f"{who} has {a} {what} and gives away {b}. How many {what} are left?"
        steps, ans = f"{a} - {b} = {a - b} {what} are left.", a - b
    else:
        q = f"{who} buys {c} boxes of {what} with {b} in each box. How many {what} is that?"
        steps, ans = f"{c} boxes of {b} is {c} * {b} = {c * b} {what}.", c * b
    return {"question": q, "answer": f"{steps}\n#### {ans}"}


def load_dataset(**kwargs) -> datasets.DatasetDict:
    rng = random.Random(SEED)
    rows = [_problem(rng) for _ in range(N_TEST + N_TRAIN)]
    return datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_list(rows[:N_TEST]),
            "train": datasets.Dataset.from_list(rows[N_TEST:]),
        }
    )
