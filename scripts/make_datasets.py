"""Write the course's small datasets into assets/ (fixed seed, so every run writes the same bytes).

    python scripts/make_datasets.py          # rewrite assets/*/{train,test}.jsonl and each DATASHEET.md

Every dataset is generated here from word lists and templates written for the course, so its provenance
and licence are simple (CC0, see each DATASHEET.md). Every dataset has a `test` split that no notebook
trains on; where it matters, the test split also uses names, products or wordings the train split never
shows, so a rise in a held-out score means the model learned the skill, not the examples.
"""

import json
import random
from pathlib import Path

SEED = 20261123
ASSETS = Path(__file__).resolve().parents[1] / "assets"

# ---------------------------------------------------------------------------------------------------------
# Word lists shared by several datasets. Split into train-only and test-only halves where generalisation
# is what a notebook measures.
# ---------------------------------------------------------------------------------------------------------
FIRST_NAMES_TRAIN = [
    "Maria", "Tom", "Amina", "Lars", "Yuki", "Carlos", "Priya", "Jonas", "Fatima", "Ivan", "Chloe", "Mateo",
    "Aisha", "Pedro", "Elena", "Kofi", "Sofia", "Hiro", "Nadia", "Oscar", "Leila", "Marek", "Greta", "Ravi",
    "Ines", "Tariq", "Lucia", "Emil", "Zara", "Bruno", "Mina", "Felix", "Alma", "Omar", "Clara", "Diego",
]
FIRST_NAMES_TEST = ["Anya", "Kwame", "Rosa", "Henrik", "Mei", "Samir", "Leona", "Tobias", "Nia", "Pavel", "Ingrid", "Hugo"]
LAST_NAMES_TRAIN = [
    "Lopez", "Baker", "Odhiambo", "Nilsson", "Tanaka", "Ruiz", "Sharma", "Weber", "Haddad", "Petrov", "Martin",
    "Silva", "Bello", "Costa", "Novak", "Mensah", "Rossi", "Sato", "Karimi", "Berg", "Mansour", "Kowalski",
    "Fischer", "Iyer", "Moreau", "Aziz", "Romano", "Lund", "Okafor", "Duarte",
]
LAST_NAMES_TEST = ["Achterberg", "Quispe", "Varga", "Delacroix", "Mbeki", "Oyelaran", "Lindqvist", "Castellano"]
CITIES_TRAIN = [
    "Porto", "Leeds", "Nairobi", "Oslo", "Osaka", "Seville", "Pune", "Bremen", "Beirut", "Kazan", "Lyon", "Recife",
    "Lagos", "Turin", "Brno", "Accra", "Naples", "Sapporo", "Tabriz", "Bergen", "Tunis", "Gdansk", "Graz", "Mysore",
]
CITIES_TEST = ["Cusco", "Tartu", "Dakar", "Ghent", "Hobart", "Kraków", "Medan", "Aarhus"]
JOBS_TRAIN = [
    "pharmacist", "carpenter", "teacher", "nurse", "architect", "baker", "electrician", "journalist",
    "pilot", "librarian", "plumber", "chemist", "gardener", "translator", "dentist", "mechanic", "florist",
    "photographer", "accountant", "firefighter",
]
JOBS_TEST = ["beekeeper", "surveyor", "cartographer", "optician", "locksmith", "glassblower"]
# Notebook 03 chooses learning rates on a dev split of held-out people: its names, cities and jobs occur in
# neither train nor test, so tuning on it says nothing about either.
FIRST_NAMES_DEV = ["Ayla", "Bastian", "Chiara", "Dmitri", "Esme", "Farid", "Gisela", "Jun", "Kalani", "Nuno"]
LAST_NAMES_DEV = ["Abernathy", "Bjornstad", "Cardoso", "Dzeko", "Esposito", "Fontaine", "Halvorsen", "Nakamura"]
CITIES_DEV = ["Arequipa", "Bilbao", "Cork", "Davao", "Fez", "Gothenburg", "Kumasi", "Rouen"]
JOBS_DEV = ["tailor", "welder", "sommelier", "veterinarian", "potter", "archivist"]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def user(text):
    return [{"role": "user", "content": text}]


def assistant(text):
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------------------------------------------------
# 1. Pre-training corpus: short, simple stories from a small grammar (think TinyStories, but generated).
# ---------------------------------------------------------------------------------------------------------
STORY_KIDS = ["Lily", "Ben", "Mia", "Sam", "Anna", "Leo", "Zoe", "Max", "Ella", "Noah", "Ruby", "Finn"]
STORY_PRONOUN = {"Lily": "she", "Mia": "she", "Anna": "she", "Zoe": "she", "Ella": "she", "Ruby": "she",
                 "Ben": "he", "Sam": "he", "Leo": "he", "Max": "he", "Noah": "he", "Finn": "he"}
STORY_PETS = ["dog", "cat", "rabbit", "duck", "frog", "bird", "horse", "fish"]
STORY_PLACES = ["the park", "the garden", "the beach", "the forest", "the farm", "the lake", "the hill", "school"]
STORY_THINGS = ["ball", "kite", "boat", "box", "hat", "book", "drum", "cake", "shell", "key"]
STORY_COLOURS = ["red", "blue", "green", "yellow", "big", "small", "shiny", "old"]
STORY_FEELINGS = ["happy", "sad", "scared", "tired", "proud", "surprised"]
STORY_WEATHER = ["sunny", "rainy", "windy", "cold", "warm"]


def make_story(rng):
    kid, friend = rng.sample(STORY_KIDS, 2)
    he = STORY_PRONOUN[kid]
    his = "her" if he == "she" else "his"
    pet, place, thing = rng.choice(STORY_PETS), rng.choice(STORY_PLACES), rng.choice(STORY_THINGS)
    colour, feeling, weather = rng.choice(STORY_COLOURS), rng.choice(STORY_FEELINGS), rng.choice(STORY_WEATHER)
    openings = [
        f"Once upon a time, there was a child named {kid}.",
        f"One {weather} day, {kid} went to {place}.",
        f"{kid} had a {colour} {thing}.",
        f"There was a little {pet} who lived near {place}.",
    ]
    middles = [
        f"{he.capitalize()} played with {his} {pet} all day.",
        f"{kid} and {friend} found a {colour} {thing} under a tree.",
        f"{he.capitalize()} wanted to show the {thing} to {friend}.",
        f"The {pet} ran away with the {thing}.",
        f"It was {weather}, so {kid} took {his} {thing} to {place}.",
        f"{friend} asked {kid} to share the {thing}.",
    ]
    turns = [
        f"{kid} felt {feeling}, but {friend} helped {his} {pet}.",
        f"Then the {pet} came back and gave the {thing} to {kid}.",
        f"{kid} said, \"Let's play together!\" and {friend} smiled.",
        f"They looked everywhere and found the {thing} near {place}.",
    ]
    endings = [
        f"In the end, {kid} and {friend} were {rng.choice(['happy', 'good friends', 'very tired'])}.",
        f"From that day on, {kid} always shared {his} {thing}.",
        f"The sun went down and {kid} went home with {his} {pet}.",
        f"{kid} learned that friends make every day better.",
    ]
    parts = [rng.choice(openings)] + rng.sample(middles, rng.randint(1, 3)) + [rng.choice(turns), rng.choice(endings)]
    return " ".join(parts)


def make_pretrain(rng, n_train=3000, n_test=300):
    stories = []
    seen = set()
    while len(stories) < n_train + n_test:
        story = make_story(rng)
        if story not in seen:  # exact duplicates would leak between the splits
            seen.add(story)
            stories.append({"text": story})
    return stories[:n_train], stories[n_train:]


# ---------------------------------------------------------------------------------------------------------
# 2. SFT: extract a person's details from a sentence into a fixed JSON schema.
#    The instruct model can write JSON, but not this schema with these keys, types and order: a skill SFT adds.
# ---------------------------------------------------------------------------------------------------------
EXTRACTION_INSTRUCTIONS = [
    "Extract the person's details from the text as JSON.",
    "Turn this sentence into a JSON record of the person.",
    "Read the text and return the person as a JSON object.",
    "Give me the details of the person in this text, as JSON.",
]
EXTRACTION_SENTENCES = [
    "{name} is a {age}-year-old {job} living in {city}.",
    "Meet {name}, {age}, who works as a {job} in {city}.",
    "After many years in {city}, {name} ({age}) still enjoys being a {job}.",
    "{name}, a {job} from {city}, turned {age} last spring.",
    "At {age}, {name} runs a small business as a {job} in {city}.",
    "Our new neighbour is {name}; {pronoun} is {age} and works as a {job} in {city}.",
    "The {job} {name} ({age}) moved to {city} last year.",
    "In {city}, everyone knows {name}, the {age}-year-old {job}.",
]


def extraction_record(rng, firsts, lasts, cities, jobs):
    first = rng.choice(firsts)
    person = {"name": f"{first} {rng.choice(lasts)}", "age": rng.randint(19, 78),
              "job": rng.choice(jobs), "city": rng.choice(cities)}
    pronoun = rng.choice(["she", "he", "they"])
    sentence = rng.choice(EXTRACTION_SENTENCES).format(pronoun=pronoun, **person)
    prompt = f"{rng.choice(EXTRACTION_INSTRUCTIONS)}\nText: {sentence}"
    answer = json.dumps(person, ensure_ascii=False)  # keys in schema order: name, age, job, city
    return {"prompt": user(prompt), "completion": assistant(answer)}


def make_sft(rng, n_train=480, n_test=64):
    train = [extraction_record(rng, FIRST_NAMES_TRAIN, LAST_NAMES_TRAIN, CITIES_TRAIN, JOBS_TRAIN)
             for _ in range(n_train)]
    # Held-out people are built from names, cities and jobs the train split never contains.
    test = [extraction_record(rng, FIRST_NAMES_TEST, LAST_NAMES_TEST, CITIES_TEST, JOBS_TEST) for _ in range(n_test)]
    return train, test


def make_sft_dev(n_dev=48):
    """Notebook 03's dev split: people from a third set of names, cities and jobs, drawn from a generator of its
    own so that adding it left the train and test files byte for byte as they were."""
    rng = random.Random(f"{SEED}-sft-dev")
    return [extraction_record(rng, FIRST_NAMES_DEV, LAST_NAMES_DEV, CITIES_DEV, JOBS_DEV) for _ in range(n_dev)]


# ---------------------------------------------------------------------------------------------------------
# 3. Preferences: answers grounded in a short context (chosen) vs. the same answer with one hallucinated value
#    (rejected). Both are fluent, the same length and the same format; only faithfulness to the context differs.
# ---------------------------------------------------------------------------------------------------------
GADGET_NAMES = ["Orbix", "Lumo", "Tessel", "Quill", "Nimbo", "Arkon", "Vela", "Pico", "Strato", "Kelvo",
                "Ferro", "Zephy", "Mantis", "Corvo", "Halden", "Brisa"]
GADGET_KINDS = ["kettle", "lamp", "speaker", "bike light", "thermostat", "router", "drone", "watch"]
GADGET_COLOURS = ["black", "white", "red", "green", "silver", "orange", "blue", "grey"]
GADGET_COUNTRIES = ["Portugal", "Norway", "Kenya", "Japan", "Chile", "Poland", "Ghana", "Canada", "Vietnam", "Peru"]


QUESTIONS = {  # fact -> (question, full-sentence answer, just the value)
    "colour": ("What colour is the {name}?", "The {name} is {v}.", "{v}"),
    "country": ("Where is the {name} made?", "The {name} is made in {v}.", "{v}"),
    "price": ("How much does the {name} cost?", "The {name} costs {v} euros.", "{v} euros"),
    "battery": ("How long does the battery of the {name} last?", "Its battery lasts {v} hours.", "{v} hours"),
    "year": ("When was the {name} released?", "The {name} was released in {v}.", "{v}"),
}
SHORT_ASKS = ["Answer with just the value.", "Reply with only the value, no sentence.", "Just the value, please."]
LONG_ASKS = ["Answer in a full sentence.", "Reply with a complete sentence.", "Please answer in one whole sentence."]


SYSTEM = "You answer questions about products."  # short: the default system prompt costs ~20 tokens a row


def describe_gadget(name, facts, left_out):
    """One or two sentences about the gadget stating every fact except those in `left_out`."""
    first = f"The {name} is a"
    first += f" {facts['colour']}" if "colour" not in left_out else ""
    first += f" {facts['kind']}" + (f" made in {facts['country']}." if "country" not in left_out else ".")
    first = first.replace(" a orange", " an orange")
    clauses = [text for key, text in (("year", f"was released in {facts['year']}"),
                                      ("price", f"costs {facts['price']} euros"),
                                      ("battery", f"has a battery that lasts {facts['battery']} hours"))
               if key not in left_out]
    if not clauses:
        return first
    return f"{first} It {', '.join(clauses[:-1])} and {clauses[-1]}." if len(clauses) > 1 else \
        f"{first} It {clauses[0]}."


def draw_gadget(rng):
    """A gadget's name and its facts (kind, colour, country, price, battery hours, year), in a fixed draw order."""
    name = f"{rng.choice(GADGET_NAMES)} {rng.choice('ABCDEFGHKLMXZ')}{rng.randint(2, 9)}"
    facts = {
        "kind": rng.choice(GADGET_KINDS), "colour": rng.choice(GADGET_COLOURS),
        "country": rng.choice(GADGET_COUNTRIES), "price": rng.randint(12, 480),
        "battery": rng.randint(2, 40), "year": rng.randint(2015, 2026),
    }
    return name, facts


def preference_record(rng, ask_rng):
    """A question about a gadget's description that asks for the answer in a given form.

    The user asks either for just the value or for a full sentence; `chosen` answers the way the user asked,
    `rejected` gives the same (correct) fact the other way. Only reading the request separates them.
    `rng` also draws a near-miss wrong value that no row uses any more, and `ask_rng` makes the choices added
    later: together they keep these exact 700 pairs, the ones notebooks 05-07, 09 and the homework measured.
    Redrawn pairs are no easier or harder, but at the cpu profile's scale (20 held-out prompts) the lessons moved
    with them: on one redraw PPO's reward hacking did not show (gold rose by 0.20 [0.05, 0.40]) and DPO's
    held-out reward accuracy rose by 0.30 [0.10, 0.45] instead of 0.45 [0.35, 0.50]. Change the draw only
    together with a re-measurement of those notebooks.
    """
    name, facts = draw_gadget(rng)
    key = rng.choice(list(QUESTIONS))
    question, sentence, value = QUESTIONS[key]
    if isinstance(facts[key], int):  # the unused near-miss draw (see the docstring)
        others = {v for v in facts.values() if isinstance(v, int)}
        wrong = facts[key]
        while wrong in others:
            wrong = facts[key] + rng.choice([-1, 1]) * rng.randint(1, max(2, facts[key] // 4))
    else:
        rng.choice([v for v in (GADGET_COLOURS if key == "colour" else GADGET_COUNTRIES) if v != facts[key]])
    left_out = ask_rng.sample([k for k in QUESTIONS if k != key], 2)  # shorter prompts: 3 of the 5 facts
    wants_value = ask_rng.random() < 0.5
    ask = ask_rng.choice(SHORT_ASKS if wants_value else LONG_ASKS)
    prompt = f"{describe_gadget(name, facts, left_out)}\nQuestion: {question.format(name=name)} {ask}"
    as_value = assistant(value.format(v=facts[key]))
    as_sentence = assistant(sentence.format(name=name, v=facts[key]))
    return {"prompt": [{"role": "system", "content": SYSTEM}] + user(prompt),
            "chosen": as_value if wants_value else as_sentence, "rejected": as_sentence if wants_value else as_value}


def make_preferences(rng, n_train=600, n_test=100):
    ask_rng = random.Random(f"{SEED}-ask")
    rows = [preference_record(rng, ask_rng) for _ in range(n_train + n_test)]
    return rows[:n_train], rows[n_train:]


# ---------------------------------------------------------------------------------------------------------
# 4. Verifiable rewards (GRPO): a gadget description, a question and a request for just the value; `answer` is
#    the value a Python function can check. (An earlier version held arithmetic word problems: SmolLM2-135M got
#    under 5% of them right at temperature 1 and never used the answer tags, so GRPO had nothing to reinforce.)
# ---------------------------------------------------------------------------------------------------------
def lookup_record(rng):
    """A question about one fact of a described gadget, asking for just the value; `answer` is that value."""
    name, facts = draw_gadget(rng)
    key = rng.choice(list(QUESTIONS))
    left_out = rng.sample([k for k in QUESTIONS if k != key], 2)
    question = QUESTIONS[key][0].format(name=name)
    prompt = f"{describe_gadget(name, facts, left_out)}\nQuestion: {question} {rng.choice(SHORT_ASKS)}"
    return {"prompt": [{"role": "system", "content": SYSTEM}] + user(prompt), "answer": str(facts[key])}


def make_rl(n_train=400, n_test=64):
    rng = random.Random(f"{SEED}-rl")
    rows, seen = [], set()
    while len(rows) < n_train + n_test:
        row = lookup_record(rng)
        if row["prompt"][-1]["content"] not in seen:
            seen.add(row["prompt"][-1]["content"])
            rows.append(row)
    return rows[:n_train], rows[n_train:]


# ---------------------------------------------------------------------------------------------------------
# 5. Retrieval: help-desk questions written the way users talk, passages written the way manuals talk.
#    Distractors: the same device with other problems (some of them near misses: two blinking lights, two
#    battery problems, two connection problems), and the same problem on other devices.
#    Held out twice over: the test questions ask about (device, problem) passages no training pair uses, in
#    wordings written separately from the training ones (other vocabulary, other sentence shapes), so a gain
#    on them is a gain on how people phrase a problem, not recall of trained sentences.
# ---------------------------------------------------------------------------------------------------------
DEVICES = ["Orbix X2 router", "Lumo S3 desk lamp", "Tessel K7 keyboard", "Nimbo A1 air purifier",
           "Arkon V5 robot vacuum", "Vela P2 smart plug", "Pico M4 baby monitor", "Strato H9 headphones",
           "Kelvo T3 thermostat", "Ferro B8 e-bike", "Zephy C2 coffee machine", "Corvo D6 doorbell camera",
           "Halden W1 washing machine", "Brisa F4 ceiling fan", "Quill R2 e-reader", "Mantis G5 drone"]
# (manual wording for the passage, training wordings of a user, held-out wordings of a user)
PROBLEMS = [
    ("the status LED flashes amber after a firmware update",
     ["my {d} light keeps blinking orange since the update", "{d} orange flashing light after updating",
      "why is the {d} blinking yellowish after new software", "{d} amber blink won't stop"],
     ["ever since I installed the latest version the {d} indicator pulses gold",
      "{d}: small lamp on the front goes on and off in amber, started after upgrading",
      "upgraded the firmware and now the {d} glows and flickers orange-ish", "{d} yellow status signal pulsing post-upgrade"]),
    ("the status LED flashes red while the battery is charging",
     ["{d} red light blinking while it charges", "my {d} flashes red when plugged in",
      "why does the {d} blink red on the charger", "{d} charging light keeps flashing red"],
     ["connected the {d} to power and a crimson indicator keeps pulsing", "{d} shows a scarlet lamp going on-off during recharge",
      "the little lamp on my {d} turns red again and again whenever it is topping up",
      "{d} pulsing red glow as soon as I attach the cable"]),
    ("the device does not power on when the button is pressed",
     ["{d} is completely dead, nothing happens", "my {d} won't turn on at all", "{d} no power when I push the switch",
      "pressed the button on the {d} and nothing"],
     ["{d} refuses to start up", "holding down the on key of my {d} does nothing, screen stays black",
      "{d} totally lifeless, can't get it going", "my {d} will not boot whatever I try"]),
    ("the wireless connection drops intermittently",
     ["{d} keeps losing wifi every few minutes", "my {d} disconnects randomly", "{d} signal cuts out now and then",
      "why does the {d} go offline all the time"],
     ["{d} loses its internet link several times an hour", "my {d} keeps falling off the network",
      "the {d} has a flaky wlan connection", "{d} connectivity comes and goes"]),
    ("the companion app cannot find the device during pairing",
     ["phone app doesn't see my {d}", "can't pair the {d} with my phone", "{d} not showing up in the app",
      "app says no device found for {d}"],
     ["smartphone application fails to detect the {d} while setting it up", "{d} invisible to the mobile software during setup",
      "trying to link my {d} but the scan on my mobile finds nothing", "setup wizard on my handset never discovers the {d}"]),
    ("the battery depletes faster than specified",
     ["{d} battery dies really quickly", "my {d} runs out of charge in no time", "{d} doesn't hold a charge anymore",
      "{d} battery life is terrible"],
     ["{d} drains to empty within an hour", "my {d} needs recharging constantly",
      "the {d} power cell empties much sooner than advertised", "{d} barely lasts half a day when full"]),
    ("the battery does not charge when the cable is connected",
     ["{d} won't charge when plugged in", "my {d} battery stays at zero on the charger",
      "plugging in the {d} doesn't charge it", "{d} not charging at all"],
     ["{d} percentage never goes up while connected to power", "my {d} refuses to refill its cell from the adapter",
      "hooked the {d} up to the mains for hours and it is still empty", "{d} ignores the power lead, level stuck"]),
    ("the unit emits a high-pitched noise during operation",
     ["{d} makes a squeaky whining sound", "my {d} is beeping and screeching while running", "weird squeal from the {d}",
      "{d} whistling noise when it works"],
     ["{d} produces a shrill tone while in use", "there is an annoying piercing sound coming out of my {d}",
      "my {d} hums at a very high frequency when on", "{d} screams like a kettle"]),
    ("the touch controls are unresponsive",
     ["{d} buttons don't react when I tap them", "touch panel on my {d} ignores me", "{d} won't respond to taps",
      "can't press anything on the {d} screen"],
     ["the {d} touchscreen doesn't register my finger", "my {d} disregards every swipe and press",
      "{d} touch surface is frozen", "nothing happens when my finger hits the {d} display"]),
    ("the device overheats and shuts down",
     ["{d} gets super hot and turns itself off", "my {d} switches off because it's too warm", "{d} burning hot then dies",
      "{d} shuts down when it heats up"],
     ["{d} cuts out after getting scorching", "my {d} becomes too hot to hold and then powers off",
      "thermal shutdown on the {d} several times a day", "the {d} overheats and stops"]),
    ("the display shows error code E4",
     ["{d} screen says E4", "got an E4 message on my {d}", "what does E4 mean on the {d}", "{d} error four on display"],
     ["{d} flashing E4 on its readout", "the readout on my {d} shows E4", "{d} stuck on code E4", "fault E4 appears on the {d}"]),
    ("the device resets to factory settings on its own",
     ["my {d} keeps forgetting all my settings", "{d} wipes itself back to default", "settings on the {d} disappear",
      "{d} randomly goes back to out of the box state"],
     ["{d} erased my preferences overnight", "my {d} keeps returning to its original configuration",
      "every morning the {d} has lost its setup", "{d} restores defaults by itself"]),
]
FIXES = [
    "Hold the reset button for ten seconds, then reinstall the latest firmware from the support page.",
    "Check the power adapter and try a different outlet; if it still fails, contact support for a replacement.",
    "Move the device closer to the access point and disable power saving in the settings menu.",
    "Fully charge and discharge the battery twice to recalibrate the battery gauge.",
    "Clean the fan intake and make sure the device stands on a flat, hard surface.",
    "Remove the screen protector and run the touch calibration in the maintenance menu.",
    "Keep the vents clear and let the unit cool for thirty minutes before restarting it.",
    "Enable Bluetooth and location permissions for the app, then restart the pairing mode.",
    "Unplug the device for one minute; if the code returns, the sensor module needs service.",
    "Replace the backup coin cell and save your settings again.",
    "Use the supplied charger and wipe the charging contacts with a dry cloth.",
    "Update the companion app, then restore the last saved profile from the app's backup page.",
]
# a closing sentence per device (5 of them, so no two devices share both fix and note): no passage text repeats
# even with the device name taken out
NOTES = ["Keep the receipt for warranty claims.", "The warranty does not cover damage from third-party parts.",
         "Write down the serial number before you call.", "Service centres are listed in the printed guide.",
         "Software updates are free for five years."]


def make_retrieval(dev_combos=16, test_combos=48):
    """(train, dev, test, corpus): dev and test hold out whole (device, problem) combinations and ask about them
    only in the held-out wordings; dev is for choosing settings, test for reporting."""
    corpus, combos = [], []
    for d_i, device in enumerate(DEVICES):
        for p_i, (problem, _, _) in enumerate(PROBLEMS):
            pid = f"p{d_i:02d}{p_i:02d}"
            fix = FIXES[(p_i + d_i) % len(FIXES)]  # fixes rotate so they do not give the problem away
            corpus.append({"id": pid, "text": f"{device}: if {problem}, do the following. {fix} {NOTES[d_i % len(NOTES)]}"})
            combos.append((d_i, p_i, pid))
    rng = random.Random(f"{SEED}-retrieval")
    rng.shuffle(combos)
    held_test, held_dev, trained = combos[:test_combos], combos[test_combos:test_combos + dev_combos], \
        combos[test_combos + dev_combos:]
    by_id = {c["id"]: c["text"] for c in corpus}
    train = [{"anchor": wording.format(d=DEVICES[d_i]), "positive": by_id[pid]}
             for d_i, p_i, pid in trained for wording in PROBLEMS[p_i][1]]
    held = lambda part: [{"query": wording.format(d=DEVICES[d_i]), "positive_id": pid}  # noqa: E731
                         for d_i, p_i, pid in sorted(part, key=lambda c: c[2]) for wording in PROBLEMS[p_i][2]]
    rng.shuffle(train)
    return train, held(held_dev), held(held_test), corpus


# ---------------------------------------------------------------------------------------------------------
# General text: notebook 03 measures forgetting as the loss on it before and after fine-tuning. Paragraphs
# written by hand for this course on everyday topics, none about people records, JSON or extraction.
# ---------------------------------------------------------------------------------------------------------
GENERAL_TEXTS = [
    "Bread rises because yeast eats the sugars in the flour and releases carbon dioxide. The gas is trapped by a "
    "network of gluten, which forms when wheat proteins meet water and are kneaded. A warm kitchen speeds the process "
    "up, while a cold one slows it down and often gives the loaf a deeper flavour.",
    "The Moon always shows the same face to the Earth. Over billions of years, the pull of the Earth slowed the Moon's "
    "spin until one turn on its axis took exactly as long as one trip around the planet. Astronomers call this tidal "
    "locking, and many moons in the solar system share it.",
    "A bicycle stays upright mostly because the rider steers into the direction of a fall. The shape of the front "
    "fork also helps: when the bike leans, the front wheel turns slightly toward the lean on its own. Even so, a "
    "riderless bicycle pushed along a road will usually travel only a short distance before it tips over.",
    "Honeybees tell each other where to find food by dancing. A bee that returns from a good patch of flowers walks "
    "in a figure of eight on the comb and waggles during the straight part. The angle of that run shows the direction "
    "relative to the sun, and its length shows how far away the flowers are.",
    "Rivers rarely run in straight lines. Water flows faster on the outside of a bend, wearing the bank away, and "
    "slower on the inside, where sand and gravel settle. Over time the bends grow into wide loops, and a flood can cut "
    "through the neck of a loop and leave behind a curved lake.",
    "The printing press spread across Europe in the second half of the fifteenth century. Before it, books were "
    "copied by hand, which made them rare and expensive. Within a few decades, printed pamphlets and books were being "
    "sold in market towns, and ideas could travel much faster than before.",
    "Cats spend a large part of the day asleep, often more than twelve hours. Their ancestors hunted at dawn and dusk, "
    "and short bursts of intense activity need long periods of rest. A house cat that seems lazy is simply keeping "
    "the rhythm of a small predator.",
    "Rain forms when tiny droplets in a cloud collide and merge until they are too heavy to stay aloft. In colder "
    "clouds, ice crystals grow at the expense of the droplets around them and then melt as they fall. Whether it "
    "reaches the ground as rain, sleet or snow depends on the temperature of the air below.",
    "A good map leaves things out. A road atlas does not show every tree, and a subway map bends the lines so that "
    "stations are easy to read rather than placed where they really are. The skill of the mapmaker lies in choosing "
    "what the reader needs and dropping the rest.",
    "Copper has been used by people for at least ten thousand years. It is soft enough to hammer into shape, and when "
    "it is mixed with tin it becomes bronze, which is much harder. Today most copper ends up in electrical wires, "
    "because few metals carry current as well for the price.",
    "Learning a musical instrument takes patience. At first the fingers are slow and the notes sound uneven, but "
    "short daily practice works better than one long session each week. Many teachers suggest playing a piece slowly "
    "and correctly before trying it at full speed.",
    "Glaciers are slow rivers of ice. Snow that does not melt over the summer is pressed by the layers above it into "
    "dense ice, which begins to flow downhill under its own weight. As a glacier moves, it grinds the rock beneath it "
    "and carves valleys with a typical U shape.",
    "Tea was first drunk in China, and from there the habit spread along trade routes to the rest of Asia and later "
    "to Europe. Green and black tea come from the same plant. The difference lies in how the leaves are treated after "
    "picking, in particular whether they are left to oxidise.",
    "A lighthouse warns ships away from rocks and marks the entrance to a harbour. Each one flashes in its own "
    "pattern, so a sailor who counts the seconds between the flashes can tell which lighthouse is in sight. Many are "
    "now automatic, and the keepers who once lived in them have gone.",
    "Volcanoes form where molten rock finds a way to the surface. Some, like those in Hawaii, release runny lava that "
    "spreads slowly over wide areas. Others erupt with great force because their magma is thick and full of gas, "
    "throwing ash high into the sky.",
    "Owls can turn their heads much further than people can, close to three quarters of a full circle. Their eyes "
    "are fixed in their sockets, so turning the head is the only way to look around. Special blood vessels in the "
    "neck keep the brain supplied while the head twists.",
    "A simple garden compost heap turns kitchen scraps and leaves into dark, crumbly soil. Worms, fungi and bacteria "
    "do the work, and they need air and some moisture. Turning the heap every few weeks keeps it from becoming wet "
    "and smelly and speeds up the whole process.",
    "The first public railways carried coal before they carried passengers. Steam engines pulled wagons along iron "
    "rails from mines to rivers and ports. When people saw how fast and cheap the trains were, new lines spread "
    "quickly, and towns began to grow around the stations.",
    "Salt was once so valuable that it was traded over long distances and taxed by rulers. It preserved meat and fish "
    "through the winter, long before refrigerators existed. Some old roads in Europe and Africa are still named after "
    "the salt that was carried along them.",
    "Sound travels as a wave of pressure through the air. It moves at roughly three hundred and forty metres per "
    "second, much slower than light. That is why you see a flash of lightning before you hear the thunder, and why "
    "counting the seconds between them tells you how far away the storm is.",
    "Good sleep helps memory. During the night the brain replays parts of the day and strengthens some connections "
    "while letting others fade. Students who sleep well after studying usually remember more than those who stay up "
    "late to read the same pages again.",
    "A chess game is usually divided into three parts. In the opening, players bring their pieces out and fight for "
    "the centre of the board. The middle game is full of plans and attacks, and in the endgame, with few pieces left, "
    "even the king becomes an active fighter.",
    "Coral reefs are built by tiny animals that live together in colonies. Each one makes a hard skeleton of lime, "
    "and over centuries these skeletons pile up into huge structures. Reefs cover a small part of the ocean floor but "
    "give shelter to a large share of all sea life.",
    "Paper money only works because people trust it. A banknote is worth little as paper, but everyone accepts it "
    "because they expect others to accept it too. When that trust breaks down, prices can rise very quickly, and "
    "people turn to goods or foreign coins instead.",
    "Maple syrup is made from the sap of maple trees in early spring. Cold nights and warm days push the sap up the "
    "trunk, and farmers collect it through small taps. It takes about forty litres of sap, boiled for hours, to make "
    "a single litre of syrup.",
    "The human heart beats around one hundred thousand times a day. It has four chambers: two receive blood and two "
    "pump it out, one side to the lungs and the other to the rest of the body. Valves between the chambers keep the "
    "blood flowing in one direction.",
    "Wind turbines turn the movement of air into electricity. The long blades are shaped like aircraft wings, so the "
    "wind creates lift that spins them around. Inside the tower's head, a gearbox and a generator convert the slow "
    "rotation into current for the grid.",
    "Origami is the art of folding paper into shapes without cutting or gluing it. Simple models such as a boat or a "
    "crane can be learned in a few minutes. Engineers have borrowed its ideas to design solar panels and medical "
    "devices that fold small and open up once they are in place.",
    "Deserts are not always hot. A desert is defined by how little rain it receives, not by its temperature, and some "
    "of the largest deserts on Earth are cold ones. Even in hot deserts, nights can be very cold because dry air and "
    "clear skies let the heat escape.",
    "Libraries have changed a great deal, but their purpose is the same: to keep knowledge and share it freely. Many "
    "now lend e-books, offer quiet rooms for study and run classes for children and adults. For some visitors, they "
    "are the only place with free access to a computer.",
    "Penguins cannot fly, but they are superb swimmers. Their wings have become stiff flippers, and their bodies are "
    "shaped to slip through the water. Some species dive hundreds of metres deep to catch fish and can hold their "
    "breath for many minutes.",
    "A recipe is a kind of algorithm. It lists the ingredients, like the inputs of a program, and then gives steps in "
    "a fixed order. As with code, small changes in the order or the quantities can give a very different result, and "
    "a good cook learns which steps matter most.",
]


def make_general():
    return [{"text": text} for text in GENERAL_TEXTS]


DATASHEETS = {
    "general": ("General text (forgetting)", "Notebook 03 measures what fine-tuning forgets: the loss of each "
                "fine-tuned model on these paragraphs against the untouched model's.",
                "32 paragraphs of 42 to 58 words on everyday topics (bread, the Moon, bees, railways...), written by "
                "hand for the course; nothing about people, records or JSON, so no approach is trained on their "
                "subject. Only a test split: nothing trains on it.",
                "`text` (str)"),
    "pretrain": ("Tiny stories for pre-training", "Notebook 01 pre-trains a tiny Llama-architecture model "
                 "(and its tokenizer) from scratch on these stories.",
                 "Short children's stories (4 to 7 sentences) from a small template grammar: 12 children, "
                 "8 pets, 8 places, 10 things. Exact duplicates are removed before the split.",
                 "`text` (str)"),
    "sft": ("Person-record extraction (SFT)", "Notebook 01 fine-tunes the instruct model on it; held-out exact-"
            "match accuracy before vs after is the skill measurement.",
            "A user message with one of 4 instructions and one of 8 sentence templates about a person; the "
            "assistant answers with one JSON object with keys `name`, `age` (int), `job`, `city`, in that order. "
            "The test split uses first names, last names, cities and jobs that never occur in train; the dev split "
            "(notebook 03 chooses its learning rates on it) a third set that occurs in neither.",
            "`prompt` (list of chat messages: one user turn), `completion` (list: one assistant turn). This is "
            "TRL's conversational prompt-completion format, so SFTTrainer computes the loss on the completion only."),
    "preferences": ("Answer the way the user asked (preferences)",
                    "Reward modelling, PPO, DPO and ORPO (notebooks 05 to 07).",
                    "A short system prompt, a description of a fictional gadget that states 3 of its 5 facts "
                    "(colour, country, year, price, battery) and a question about one of them. The user asks for "
                    "either just the value or a full sentence (3 wordings each). `chosen` gives the fact the way "
                    "the user asked, `rejected` gives the same, correct fact the other way, so only following the "
                    "request separates them. The starting model prefers the full sentence whatever was asked, so "
                    "it starts near chance (notebook 06 measures it). Both answers are always correct: a reward "
                    "model trained on these pairs never sees a wrong fact, which notebook 05 uses to show reward "
                    "hacking.",
                    "`prompt` (list: a system and a user turn), `chosen`, `rejected` (lists: one assistant turn "
                    "each), TRL's conversational preference format."),
    "rl": ("Questions with a verifiable answer (GRPO)", "GRPO (notebook 08): Python reward functions check that "
           "a completion states `answer` (correctness) and nothing else (format).",
           "The gadget generator of the preference data, with its own random stream: a description stating 3 "
           "of 5 facts (always the one asked about), a question and a request for just the value (3 wordings). "
           "An earlier version held arithmetic word problems, replaced because SmolLM2-135M solved under 5% of "
           "them. Duplicate prompts are removed.",
           "`prompt` (list: a system and a user turn), `answer` (str: the value, e.g. `52` for 52 euros)"),
    "retrieval": ("Help-desk questions and manual passages (retrieval)", "Embedding fine-tuning with Matryoshka "
                  "loss (notebook 04).",
                  "16 fictional devices x 12 problems = 192 manual passages written in formal wording (the device, "
                  "the problem, one of 12 fixes and one of 5 closing notes, so no two passages read alike even "
                  "without the device name). Every passage has distractors: the same device with the 11 other "
                  "problems, three pairs of them near misses (two blinking lights, two battery problems, two "
                  "connection problems), and the same problem on 15 other devices. Each problem has 4 informal user "
                  "wordings for training and 4 others, written separately with other words, for dev and test. "
                  "48 (device, problem) combinations are held out for test and 16 for dev: their questions ask "
                  "about passages no training pair uses, in wordings no training question uses "
                  "(`tests/test_data.py` measures the overlap).",
                  "train: `anchor` (query), `positive` (passage text), the (anchor, positive) pair format that "
                  "MultipleNegativesRankingLoss expects. dev and test: `query`, `positive_id`. corpus: `id`, `text` "
                  "(all 192 passages, the search space for dev and test questions). dev is for choosing settings "
                  "(the learning rate), test for the reported numbers."),
}


DEFAULT_PROVENANCE = (f"generated by `scripts/make_datasets.py` (seed {SEED}) from word lists and templates "
                      "written for\n  this course; no text was copied from elsewhere. Re-running the script rewrites "
                      "identical files.")
PROVENANCE = {"general": "written for this course and kept in `scripts/make_datasets.py` (`GENERAL_TEXTS`); no "
                         "text was copied\n  from elsewhere. Re-running the script rewrites identical files."}


def write_datasheet(name, splits, out):
    title, used_by, how, columns = DATASHEETS[name]
    folder = out / name
    sizes = "\n".join(f"| {split} | {len(rows)} | {(folder / f'{split}.jsonl').stat().st_size / 1024:.0f} KiB |"
                      for split, rows in splits.items())
    example = json.dumps(next(iter(splits.values()))[0], ensure_ascii=False, indent=1)
    text = f"""# {title}

- **Used by**: {used_by}
- **How it was made**: {how}
- **Provenance**: {PROVENANCE.get(name, DEFAULT_PROVENANCE)}
- **Licence**: CC0 1.0 (public domain).
- **Columns**: {columns}
- **Held-out split**: `test` is never trained on by any notebook.

| split | rows | size |
| --- | --- | --- |
{sizes}

First row:

```json
{example}
```
"""
    (folder / "DATASHEET.md").write_text(text, encoding="utf-8")


def main(out=ASSETS):
    rng = random.Random(SEED)  # pre-training, SFT and preferences draw from it in turn; later datasets have their own
    datasets = {
        "pretrain": dict(zip(["train", "test"], make_pretrain(rng))),
        "sft": dict(zip(["train", "test"], make_sft(rng))) | {"dev": make_sft_dev()},
        "preferences": dict(zip(["train", "test"], make_preferences(rng))),
        "rl": dict(zip(["train", "test"], make_rl())),
        "retrieval": dict(zip(["train", "dev", "test", "corpus"], make_retrieval())),
        "general": {"test": make_general()},
    }
    for name, splits in datasets.items():
        for split, rows in splits.items():
            write_jsonl(out / name / f"{split}.jsonl", rows)
        write_datasheet(name, splits, out)
        print(f"{name:12s} " + ", ".join(f"{s}={len(r)}" for s, r in splits.items()))


if __name__ == "__main__":
    main()
