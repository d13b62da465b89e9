"""The sanity probe's held-out documents (workers/stages/sanity.py), written for it.

Why text of our own, and not a corpus file already on disk:
- lee_background.cor (gensim) is the calibration corpus: 299 documents, and a 512-sample recipe
  (conf/format/int8.yaml, w4a16.yaml) takes every one of them, so none is left over;
- lee.cor is scored by ppl_local and nexttoken_local: a gate tuned on the documents a task then
  reports would select checkpoints on the evaluation's own text;
- gensim is not in the GPU image (requirements/gpu.lock, gpu-quantize.lock), and a Hugging Face
  calibration set exists only for the formats that name one: a probe reading either would leave
  the quantize stages of some hosts or formats ungated.
These paragraphs are in no calibration set and no task, identical on every host, offline, and
ship with the package (a .py file is package data already). Varied on purpose (news, science,
instructions, code, dialogue, numbers, narrative, a letter): a recipe that breaks one kind of
token (digits, indentation) shows in the mean. Each is longer than 256 tokens of SmolLM2's
tokenizer, so the default `max_tokens` truncates every document to the same length.

Changing a document changes every probe figure: keep them fixed (append, never edit).
"""

from __future__ import annotations

DOCUMENTS: tuple[str, ...] = (
    # 1. news
    "The town council of Harwick voted on Tuesday evening to close the old footbridge over the "
    "river Marl after engineers found that two of its four iron supports had corroded far more "
    "than the last inspection suggested. The bridge, built in 1911 for workers walking from the "
    "terraced streets on the east bank to the textile mills on the west, now carries around three "
    "thousand pedestrians and cyclists a day. Council members said the decision was unavoidable but "
    "admitted that the detour, which sends walkers almost a kilometre downstream to the road bridge, "
    "will be a burden for older residents and for parents taking children to the primary school. "
    "A temporary ferry, run by volunteers from the rowing club, was proposed by one councillor and "
    "will be discussed next month. The cost of repairing the supports has been estimated at between "
    "four hundred thousand and six hundred thousand pounds, depending on whether the original "
    "ironwork can be saved or must be replaced with steel. Local historians have started a petition "
    "asking that the bridge keep its appearance, pointing out that it appears in several paintings "
    "held by the town museum. The council expects to publish a full engineering report before the "
    "end of the year and has promised a public meeting before any contract is signed. Until then, "
    "fences will be placed at both ends of the bridge, and a warden will patrol the riverside path "
    "during the morning and evening rush.",
    # 2. science
    "When water freezes, its molecules arrange themselves into a hexagonal lattice held together by "
    "hydrogen bonds. Each oxygen atom sits at the centre of a tetrahedron formed by four neighbours, "
    "and the open structure that results takes up more space than the liquid, in which the bonds "
    "constantly break and re-form. This is why ice floats, and why a bottle of water left in a "
    "freezer can crack. The expansion is about nine percent by volume, large enough to split rock "
    "when water seeps into cracks and freezes overnight, a process geologists call frost wedging. "
    "The density of liquid water also behaves unusually: it is highest at about four degrees "
    "Celsius, not at the freezing point. In a lake cooling in autumn, the densest water sinks to the "
    "bottom until the whole body of water reaches four degrees; only then can the surface cool "
    "further and freeze. The layer of ice that forms insulates the water below, so that fish and "
    "plants survive the winter in liquid water close to four degrees. Under high pressure, ice can "
    "take more than a dozen other crystal forms, some of them denser than liquid water. These forms "
    "do not occur naturally on the surface of the Earth, but they are thought to exist deep inside "
    "icy moons such as Ganymede, where the pressure of the overlying ice is enormous.",
    # 3. instructions
    "To repot a houseplant, first choose a new pot that is only two or three centimetres wider than "
    "the old one; a pot that is much larger holds more wet soil than the roots can use, and the roots "
    "may rot. Make sure the new pot has a drainage hole. Water the plant lightly a day before you "
    "repot it, so that the root ball holds together. Cover the hole in the new pot with a piece of "
    "mesh or a shard of broken pottery, then add a layer of fresh potting mix. Turn the old pot on "
    "its side, support the base of the stems with one hand, and tap the rim of the pot against the "
    "edge of a table until the plant slides out. If roots are circling the bottom of the root ball, "
    "gently loosen them with your fingers, and cut away any that are brown, soft or smell bad. Set "
    "the plant in the new pot so that the top of the root ball sits a little below the rim, then "
    "fill the space around it with potting mix, pressing it down lightly to remove large air gaps. "
    "Do not bury the stems deeper than they were before. Water the plant thoroughly until water runs "
    "from the drainage hole, and let it drain. Keep the plant out of direct sun for about a week "
    "while the roots recover, and do not add fertiliser for the first month.",
    # 4. code
    "import csv\n"
    "from collections import defaultdict\n"
    "from pathlib import Path\n"
    "\n"
    "\n"
    "def monthly_totals(path: Path) -> dict[str, float]:\n"
    '    """Sum the amount column of a CSV of transactions by month (YYYY-MM).\n'
    "\n"
    "    Rows without a date or with an amount that is not a number are skipped and counted.\n"
    '    """\n'
    "    totals: dict[str, float] = defaultdict(float)\n"
    "    skipped = 0\n"
    "    with path.open(newline='', encoding='utf-8') as f:\n"
    "        for row in csv.DictReader(f):\n"
    "            date = (row.get('date') or '').strip()\n"
    "            try:\n"
    "                amount = float(row.get('amount', ''))\n"
    "            except ValueError:\n"
    "                skipped += 1\n"
    "                continue\n"
    "            if len(date) < 7:\n"
    "                skipped += 1\n"
    "                continue\n"
    "            totals[date[:7]] += amount\n"
    "    if skipped:\n"
    "        print(f'{path.name}: skipped {skipped} rows')\n"
    "    return dict(sorted(totals.items()))\n"
    "\n"
    "\n"
    "def largest_month(totals: dict[str, float]) -> tuple[str, float] | None:\n"
    "    if not totals:\n"
    "        return None\n"
    "    month = max(totals, key=lambda m: totals[m])\n"
    "    return month, totals[month]\n"
    "\n"
    "\n"
    "if __name__ == '__main__':\n"
    "    import sys\n"
    "\n"
    "    for name in sys.argv[1:]:\n"
    "        totals = monthly_totals(Path(name))\n"
    "        for month, amount in totals.items():\n"
    "            print(f'{month}  {amount:12.2f}')\n"
    "        best = largest_month(totals)\n"
    "        if best is not None:\n"
    "            print(f'largest: {best[0]} ({best[1]:.2f})')\n",
    # 5. dialogue
    "Customer: Hello, I ordered a pair of walking boots last week and they arrived yesterday, but "
    "the left boot is half a size larger than the right one.\n"
    "Assistant: I'm sorry to hear that. Could you tell me the order number? It starts with two "
    "letters followed by eight digits.\n"
    "Customer: Yes, it's KT40715582.\n"
    "Assistant: Thank you. I can see the order: the Ridgeline boots in brown, size forty-two. Are "
    "both boots labelled forty-two inside the tongue?\n"
    "Customer: The right one says forty-two, the left one says forty-two and a half.\n"
    "Assistant: That is clearly a packing mistake on our side. I can send you a new pair today by "
    "express delivery at no cost, and a prepaid label to return the mismatched pair. Would that "
    "work for you?\n"
    "Customer: That would be great. I'm going on a hiking trip on Saturday, so I need them before "
    "Friday if possible.\n"
    "Assistant: Express delivery to your address takes one to two working days, so they should "
    "arrive on Wednesday or Thursday. I'll add a note for the warehouse to check both sizes before "
    "the parcel is sealed.\n"
    "Customer: Thank you. Do I need to send the old pair back before the new one arrives?\n"
    "Assistant: No, you can keep them until the new pair arrives and you have checked it. Then "
    "please return the old pair within thirty days using the label in your email. Is there "
    "anything else I can help you with today?\n"
    "Customer: No, that's everything. Thanks for sorting it out so quickly.",
    # 6. numbers
    "Quarterly report, regional bus service. In the third quarter the network carried 4.82 million "
    "passenger journeys, up 6.3 percent on the same quarter last year and 2.1 percent on the second "
    "quarter. Weekday journeys averaged 61,400, Saturday journeys 38,900 and Sunday journeys 21,700. "
    "Punctuality, measured as departures no more than one minute early or five minutes late, was "
    "88.4 percent against a target of 90 percent; the worst route was the 14, at 79.2 percent, "
    "because of roadworks on the ring road between July 8 and September 19. Fare revenue was 7.16 "
    "million, of which 41 percent came from monthly passes, 33 percent from single tickets bought "
    "on the bus and 26 percent from the mobile app. The share of cash payments fell from 18 to 12 "
    "percent. Operating costs were 11.9 million, so fares covered 60.2 percent of costs, against "
    "57.5 percent a year earlier. Fuel costs fell by 0.4 million as nine of the oldest diesel buses "
    "were replaced by electric ones; the fleet now has 37 electric buses out of 212. There were 23 "
    "reported accidents, none with serious injuries, compared with 31 a year earlier. Customer "
    "complaints rose from 1,140 to 1,325, mostly about crowding on routes 3 and 7 during school "
    "terms. For the fourth quarter the service plans two extra buses on each of those routes between "
    "7:30 and 8:30 and between 15:00 and 16:30.",
    # 7. narrative
    "The lighthouse keeper had not spoken to anyone for eleven days when the boat appeared at the "
    "edge of the fog. It came slowly, its engine coughing, and he watched it from the gallery with "
    "the old brass telescope that had belonged to his predecessor. There were two people on board, "
    "a woman at the wheel and a boy of perhaps ten wrapped in a blanket far too large for him. The "
    "keeper went down the spiral stairs, pulled on his boots and walked to the landing stage, where "
    "the water slapped against the stones. The woman threw him a rope without a word, and he tied it "
    "to the iron ring as he had done a thousand times with the supply boat. Only when the boat was "
    "secure did she speak. Their engine was failing, she said, and they had been trying to reach "
    "the harbour on the mainland since the morning, but the fog had turned them around twice. The "
    "keeper looked at the boy, whose lips were blue, and told them to come up to the house. He lit "
    "the stove, put the kettle on and found dry clothes that fitted nobody. While the boy slept on "
    "the bench by the fire, the woman told him where they had come from, and the keeper, who had "
    "long since stopped expecting anything from the sea, listened until the lamp above them began "
    "its slow turn into the night.",
    # 8. letter
    "Dear Ms Okafor,\n"
    "Thank you for your letter of 3 March and for the detailed comments on the draft plan for the "
    "new community library. The planning group met last Thursday and discussed each of your points. "
    "We agree that the reading room should face the garden rather than the car park, and the "
    "architect has already produced a revised layout that moves it to the south side of the "
    "building. This also allows the children's section to have its own entrance, which several other "
    "residents asked for. On the question of opening hours, we are not yet able to promise evening "
    "opening on every weekday. The budget we have been given covers four evenings a week, and we "
    "have chosen Monday to Thursday because the survey showed that Friday evenings are the least "
    "popular. We will review this after the first year, when we have real figures on how the "
    "library is used. Your suggestion of a small room that local groups can book free of charge has "
    "been well received, and we are looking at whether the former storeroom on the first floor "
    "could be converted. Finally, you asked about access for wheelchair users. The new plans include "
    "a lift to the first floor, step-free entrances on both sides and accessible toilets on each "
    "level. We would be glad to show you the revised drawings at the open evening on 24 April.\n"
    "Yours sincerely,\nThe Library Planning Group",
)
