"""Build ``tinystories_lib/stories/data/vocab.tsv``: ~1,500 basic words a 3-4-year-old understands.

The paper (Eldan & Li 2023, sec. 2) drew each prompt's noun, verb and adjective from "a vocabulary
of about 1500 basic words" that "a typical 3-4 year-old" knows. The word list itself was not
published, so we rebuild one reproducibly:

1. **seed** -- a hand-curated list of candidate child words (below, in this file), grouped by part
   of speech and by a *category* the offline storyteller needs to use the word grammatically:
   nouns by kind (animal, person, body, toy, food, clothes, thing, nature, place, vehicle) with
   mass nouns marked; verbs by frame (``intr`` no object, ``obj`` takes a thing, ``pers`` takes a
   person or animal, ``food``/``drink`` take something to eat/drink; an optional preposition,
   e.g. look *at*); adjectives by what they describe (``thing``, ``mood``, ``trait``,
   ``weather``, ``taste``).
2. **format** -- one lowercase alphabetic word, at least two letters (no spaces, hyphens, caps).
3. **deny** -- a hand deny list, with a reason per group (not child-appropriate, ambiguous between
   senses or pronunciations, plural-only nouns, inflections that read badly in a story).
4. **lexicon** -- ``lemminflect`` must know the word as a lemma of that part of speech, unless it
   is on the hand ALLOW list (nursery words its lexicon lacks: teddy, yummy, ...).
5. **frequency** -- ``wordfreq`` Zipf frequency (English) >= ``MIN_ZIPF`` = 2.5 (about one use in
   three million words): drops words too rare to be in a small child's vocabulary.
6. **dedupe** -- a word seeded twice for one part of speech keeps its first category.
7. **cap** -- the ``CAP`` = 500 most frequent words per part of speech are kept (ties keep seed
   order). Web frequency undercounts nursery words, so the cap falls on words such as oink,
   ladybug and mitten: the price of a rule anyone can rerun rather than a hand pick.

Inflections come from ``lemminflect`` (first form, with a few hand overrides such as fish->fish);
the article ("a"/"an") from spelling rules with a hand list of exceptions (an hour, a unicorn).

Counts from the committed run (words surviving after each rule; ``python tools/build_vocab.py``
prints the same table):

    rule         noun   verb  adjective
    seed          548    612        607
    format        548    612        607
    deny          534    590        595
    lexicon       534    589        582
    frequency     533    579        565
    dedupe        515    501        504
    cap           500    500        500

Run from the repository root; needs ``pip install -e ".[vocab]"`` (build-time only: the
package reads the TSV and never imports these; the committed file was built with wordfreq 3.1.1
and lemminflect 0.2.3):

    python tools/build_vocab.py            # rewrites tinystories_lib/stories/data/vocab.tsv
    python tools/build_vocab.py --check    # exits 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tinystories_lib" / "stories" / "data" / "vocab.tsv"
MIN_ZIPF = 2.5
CAP = 500
COLUMNS = ["word", "pos", "category", "mass", "prep", "article",
           "plural", "third", "past", "past_participle", "ing", "zipf"]

# --- 1. seed: candidates by part of speech and category (hand-curated for this project) ---------
# A word followed by "*" is a mass noun (no plural; "some milk", never "a milk").
# A verb written "look/at" takes that preposition before its object.
NOUNS = {
    "animal": """cat dog puppy kitten bird duck duckling frog fish bunny rabbit bear lion tiger monkey
        elephant horse cow pig sheep goat chicken hen rooster mouse owl fox wolf deer squirrel
        turtle snake bee butterfly ant spider bug worm snail ladybug whale shark dolphin seal
        penguin giraffe zebra kangaroo koala panda camel donkey pony lamb calf goose swan parrot
        crow eagle bat crab octopus jellyfish starfish caterpillar dragon unicorn dinosaur hamster
        beaver raccoon hedgehog skunk moose lizard firefly dragonfly mole chipmunk seagull peacock
        ostrich hippo rhino gorilla cheetah leopard otter pup cub bull buffalo goldfish robin
        sparrow pigeon turkey toad puppy kitty bunny fly beetle moth mosquito gecko llama ox""",
    "person": """mom dad mommy daddy baby boy girl friend teacher king queen prince princess doctor nurse
        farmer baker cook grandma grandpa sister brother aunt uncle neighbor pirate fairy giant
        clown firefighter driver pilot sailor man woman lady kid child twin witch wizard knight
        mailman monster elf ghost chef dentist painter singer dancer builder police puppet""",
    "body": """foot hand head nose mouth ear eye arm leg toe finger knee tooth tummy back face cheek chin
        lip neck shoulder elbow thumb belly heart tongue skin bone tail wing paw beak fur* hair*
        feather""",
    "toy": """ball doll teddy kite puzzle block train truck boat plane robot balloon drum bell whistle top
        bubble crayon puppet marble swing slide rope sled bike wagon toy game card sticker bucket
        shovel rattle trumpet guitar piano flute horn car scooter skateboard bat racket""",
    "food": """apple banana cake cookie bread* milk* juice* soup* egg cheese* pizza carrot pea bean corn*
        cherry grape lemon orange pear peach plum berry strawberry melon candy chocolate* honey*
        jam* butter* sandwich pie muffin cupcake pancake popcorn* noodle rice* tea* water* cereal*
        yogurt* pumpkin potato tomato onion nut cracker toast* waffle lollipop treat snack lunch
        dinner breakfast meal salad sugar* salt* cucumber lettuce* broccoli* biscuit donut pasta*
        lemonade* cocoa* pudding* icing* watermelon""",
    "clothes": """hat coat shoe sock dress shirt scarf glove boot mitten jacket sweater cap crown belt button
        pocket bag backpack umbrella ribbon bow necklace ring watch costume mask cape helmet apron
        skirt pajamas jeans pants glasses shorts""",
    "thing": """box cup bowl plate spoon fork bed chair table door window lamp clock book pen pencil paper*
        picture map key lock basket bottle jar blanket pillow towel brush comb soap* mirror phone
        camera letter gift present note string* stick stone rock shell coin ladder fence gate wall
        roof step sofa couch rug carpet cupboard shelf drawer oven stove fridge sink tub bath candle
        flag net tent hammer glue* tape* wheel pot pan kettle vase knife broom bench basket jewel
        treasure* crown paint* chalk* clay* glitter* toothbrush trophy whistle shovel rake wand""",
    "nature": """tree flower leaf grass* sun moon star sky cloud rain* snow* wind* river lake sea ocean pond
        hill mountain sand* mud* branch bush rainbow puddle wave ice* fire light shadow storm cave
        nest web log rose daisy weed root acorn pebble dirt* sunshine* stream rock stone feather
        seed egg snowflake sunflower""",
    "place": """park school house garden beach zoo farm shop store market city town village castle kitchen
        bedroom room yard street road playground library hospital museum pool field jungle desert
        bakery restaurant circus camp bathroom basement attic barn tower bridge palace church garage
        classroom island forest meadow""",
    "vehicle": """car bus train truck boat ship plane rocket bike tractor wagon ambulance helicopter""",
}

VERBS = {
    "intr": """jump run walk hop skip swim fly sleep sit stand cry laugh smile giggle sing dance play rest
        wait dream shout yell whisper talk climb fall slide roll spin crawl float sink shine grow
        melt splash nap hide bounce shiver sneeze cough yawn blink wink nod frown sigh snore hum
        whistle clap march skate ski surf dive glow sparkle twinkle blow bloom rise hurry rush
        wander arrive leave return stay live go come sneak tiptoe peek stare wobble tumble trip slip
        drip leak buzz bark meow chirp quack moo roar growl howl purr hiss squeak tweet cheer agree
        argue behave escape fail matter paddle pretend scream shrink squeal stretch swing tremble
        wiggle zoom learn listen/to look/at laugh/at wait/for care/about worry/about knock/on
        point/at smile/at wave/at search/for hope/for ask/for shout/at dream/about think/about
        play/with talk/to sing/to stare/at peek/at hide/from run/from belong/to listen/for bow hunt
        pray settle appear disappear cuddle snuggle babble chatter hiccup sniff sniffle sob weep
        wail grin beam blush gasp pant puff huff burp drool toddle waddle scurry scamper dash race
        skid stumble crash land sail row drive ride jog hike camp fish shop flutter flap flicker
        fizz bubble rattle jingle chime bang boom crackle rustle sway rock shrug stomp stamp bathe
        shower doze wake squat crouch chat itch fight quarrel wonder guess imagine study practice
        spell rhyme chant freeze burn flash beep honk toot cry giggle scramble swoop soar splash
        drip trot gallop prance slither tiptoe bob shout/at hop/on sit/on knock/at glance/at
        giggle/at nod/at frown/at wink/at bark/at roar/at hiss/at look/for wish/for listen/to
        sing/along blossom sprout wilt droop yelp whimper whine grumble mumble mutter quiver
        celebrate hibernate graze peck wade dip hobble creep stroll parade twirl whirl wriggle
        squirm sulk pout peep cluck oink neigh croak hoot coo explore travel gather relax pause
        circle roam flee dart limp glide drift fade quit cheat snack kneel lean sprint breathe""",
    "obj": """kick throw catch hold carry push pull drop pick open close break fix build make find lose
        keep give take bring buy sell get want need like love share wash clean dry fold cut tear rip
        bend twist squeeze shake touch hit tap wrap paint draw color read write count plant grow
        hang stick glue tape lift raise move turn roll toss fetch see watch hear smell feel try use
        wear return steal save pack unpack lock unlock ring polish scrub sweep brush comb tie sew
        knit dig bury protect decorate stack fill empty spill pour mix stir cover hide show fly
        float sink bounce spin kick miss repair build fix paint finish start remember forget pick
        blow pop crack flip grab scratch sniff stroke pat rub poke pinch press wipe rinse soak
        sprinkle spray melt freeze warm swap pass throw drive ride row sail pedal stamp paste dust
        mop water rake mow unwrap uncover zip buckle untie lace kick name aim bounce wiggle jiggle
        rattle shake juggle tow haul carry hunt seek spot climb cross jump skip open shut scoop
        snatch yank tug clutch grip crumple snip chop saw hammer braid iron whisk send discover
        collect guard mail inflate lend borrow crush smash burst enjoy mend""",
    "pers": """hug kiss help tickle tease visit meet greet thank invite call chase follow feed pet comfort
        protect rescue teach tell ask join trust forgive scold warn wake remind hurt  sting
        scare surprise bother obey fool dress cheer punish babysit cuddle snuggle pat welcome answer
        adore believe calm frighten startle trick bathe race bully outsmart hush rock tuck squeeze
        tag phone hug nuzzle soothe free trap tame train groom encourage admire adopt defend shelter
        ignore annoy amaze praise heal""",
    "food": "eat bite taste bake cook munch chew swallow fry boil roast peel slice share nibble lick serve",
    "drink": "drink sip slurp",
}

ADJECTIVES = {
    "thing": """big small little tiny huge long short tall round square flat soft hard smooth rough bumpy
        fluffy fuzzy furry shiny sparkly bright dark light heavy thin thick fat wide narrow deep
        shallow high low hot cold warm cool wet dry clean dirty messy neat tidy new old broken empty
        full sharp pointy sticky slippery wobbly striped spotted colorful red blue green yellow
        orange purple pink brown black white gray golden silver pretty beautiful ugly cute lovely
        fancy plain strange noisy loud quiet silent fast slow quick open giant enormous glittery
        sparkling glowing dusty rusty muddy sandy icy frozen fresh rotten ripe magic magical special
        secret hidden lost favorite useful strong weak curly crooked bent stinky smelly different
        same easy hard perfect wonderful great terrible horrible awful amazing fantastic scary
        dangerous safe fun exciting boring tough true wrong right free mighty wooden nice good bad
        fine odd weird famous lucky cozy sturdy proper clear shaggy spiky bouncy squishy squeaky
        crispy soggy crumbly lumpy fizzy foamy bubbly leafy grassy rocky shady adorable gorgeous
        scruffy dotty glassy feathery scaly slimy gooey creaky cracked torn damp soaked stale toasty
        awesome cool super grand spooky crazy tricky wild fluffy warm empty cuddly sparkling glowing
        hidden lost stinky painted melted golden silky twisty curvy swirly stretchy springy prickly
        thorny hairy bald skinny wiggly jiggly silvery shimmering shining dazzling gleaming twinkly
        clunky chunky fragrant shadowy flimsy delicate bendy stiff steamy smoky mysterious enchanted
        haunted royal watery starry moonlit important simple real whole straight tight loose rare
        precious closed crowded expensive cheap plastic metal steady solid hollow pale faint early
        late sudden popular handy far locked stuck shaky spotless unlucky curved pointed teeny steep
        creepy dreadful nasty fiery burnt cooked raw gross dull difficult dim fragile useless fake
        oval wavy floppy saggy droopy baggy scratchy ticklish woolly tangled crackly jingly icky
        rosy dotted glittering twinkling melty healthy pleasant spotty speckled frilly lacy puffy
        bushy mossy comfy homemade fishy nutty oily greasy cramped roomy""",
    "mood": """happy sad glad angry mad upset scared afraid frightened nervous worried calm excited bored
        lonely tired sleepy hungry thirsty sick hurt proud shy surprised confused curious jealous
        grumpy cheerful joyful sorry thankful grateful embarrassed ashamed relieved disappointed
        eager impatient content gloomy merry peaceful cozy sore hopeful terrified delighted amazed
        annoyed cranky fussy dizzy thrilled unhappy puzzled startled alone ready awake asleep alive
        glum sulky moody teary giddy jumpy bashful sheepish sweaty itchy drowsy relaxed heartbroken
        homesick lonesome pleased shocked cross furious safe full starving stuffed bored scared
        frightened surprised embarrassed relieved delighted amazed annoyed thrilled snug gleeful
        overjoyed grouchy queasy comfortable uncomfortable energetic exhausted guilty loved
        confident sure interested awkward helpless miserable anxious frustrated restless giggly
        whiny weepy achy perky fidgety concerned troubled""",
    "trait": """kind nice mean good bad naughty brave smart clever wise silly funny friendly gentle polite
        rude honest helpful careful careless lazy playful busy bossy greedy generous patient strong
        weak young old sweet loyal foolish stubborn selfish fair rich poor famous cheeky clumsy
        graceful quiet loud wild tame fierce bold obedient grumpy thoughtful caring cruel shy
        curious lively naughty spoiled adventurous fearless timid jolly lovable handsome goofy
        daring sneaky unfair nosy mischievous loving cheeky caring clever wicked evil grumpy cuddly
        cute pretty beautiful famous lucky heroic speedy swift nimble chatty talkative dear beloved
        faithful active humble modest talented trusty truthful unfriendly disobedient sporty
        artistic forgetful brainy cheery tough""",
    "weather": """sunny rainy windy cloudy snowy stormy foggy misty chilly freezing breezy frosty cold hot
        warm wet dark bright gloomy humid dreary blustery wintry clear""",
    "taste": """yummy tasty sweet sour salty bitter spicy delicious juicy crunchy creamy yucky fresh ripe
        sticky chewy crusty sugary minty fruity cheesy buttery peppery savory bland mushy tangy
        moldy""",
}

# --- 3. deny: hand-curated exclusions, with the reason for each group ----------------------------
DENY = {
    # "word" drops it for every part of speech, "word:pos" for that one only.
    # two senses the storyteller would mix up (a bat: animal or toy?), or a reading that is not
    # the child one (present: gift or now?)
    "ambiguous": """bat:noun bow:noun fly:noun top:noun present:noun right fine:adjective
        content:adjective order:verb proper same true""",
    # plural-only nouns ("a pants", "the glasses was") read badly in templates
    "plural_only": "pajamas jeans pants glasses shorts scissors police",
    # not for a 3-year-old's story: weapons, killing, cruelty, religion (kept neutral), body shaming
    "not_child": "knife hunt cruel punish pray church terrified bury fat",
    # stative verbs ("was wanting", "wanted to want") or verbs that need a second complement
    # ("give the ball" -- to whom?); and adjectives that cannot stand before a noun or after "felt"
    "usage": """want need like love see hear feel know get give try start finish return matter
        remain succeed belong settle asleep awake alive""",
}


# Nursery words lemminflect's lexicon lacks; its rules inflect them correctly.
ALLOW = {"mole", "ox", "fridge", "pan", "log", "stinky", "cheeky", "teddy", "yummy", "sparkly", "stripy", "kitty", "mommy", "daddy", "glittery", "squishy",
         "bouncy", "spiky", "cranky", "fussy", "cocoa", "lemonade", "icing", "donut", "trophy",
         "woolen", "yucky", "jolly", "tummy", "chewy", "crusty", "shaggy", "squeaky", "crispy",
         "lollipop", "cupcake", "firefly", "dragonfly", "ladybug", "chipmunk", "hedgehog", "seagull",
         "gecko", "mailman", "toothbrush", "snowflake", "sunflower", "skateboard", "scooter", "pup",
         "babysit", "meow", "moo", "quack", "tweet", "chirp", "purr", "squeal", "slurp"}

# Hand overrides where lemminflect's first form is not the one a children's story uses.
OVERRIDES = {
    ("noun", "fish"): {"plural": "fish"},
    ("noun", "sheep"): {"plural": "sheep"},
    ("noun", "deer"): {"plural": "deer"},
    ("noun", "moose"): {"plural": "moose"},
    ("noun", "goldfish"): {"plural": "goldfish"},
    ("noun", "jellyfish"): {"plural": "jellyfish"},
    ("noun", "starfish"): {"plural": "starfish"},
    ("noun", "buffalo"): {"plural": "buffaloes"},
    ("noun", "ox"): {"plural": "oxen"},
    ("noun", "hippo"): {"plural": "hippos"},
    ("noun", "mailman"): {"plural": "mailmen"},
    ("verb", "hang"): {"past": "hung", "past_participle": "hung"},
    ("verb", "dive"): {"past": "dove" if False else "dived", "past_participle": "dived"},
    ("verb", "shine"): {"past": "shone", "past_participle": "shone"},
    ("verb", "dream"): {"past": "dreamed", "past_participle": "dreamed"},
    ("verb", "spill"): {"past": "spilled", "past_participle": "spilled"},
    ("verb", "learn"): {"past": "learned", "past_participle": "learned"},
    ("verb", "burn"): {"past": "burned", "past_participle": "burned"},
    ("verb", "sneak"): {"past": "sneaked", "past_participle": "sneaked"},
    ("verb", "knit"): {"past": "knitted", "past_participle": "knitted"},
    ("verb", "ski"): {"past": "skied", "past_participle": "skied"},
    ("verb", "spell"): {"past": "spelled", "past_participle": "spelled"},
    ("verb", "smell"): {"past": "smelled", "past_participle": "smelled"},
    ("verb", "wake"): {"past": "woke", "past_participle": "woken"},
    ("verb", "babysit"): {"past": "babysat", "past_participle": "babysat"},
    ("verb", "mow"): {"past": "mowed", "past_participle": "mowed"},
}

# Articles: spelling decides, except where the first sound is not what the first letter says.
AN_EXCEPTIONS = {"hour", "honest", "heir", "honor"}
A_EXCEPTIONS_PREFIX = ("uni", "use", "usu", "uti", "eu", "one", "once", "ewe", "ukulele")


def article(word: str) -> str:
    """'a' or 'an' for a word read aloud (an apple, a unicorn, an hour)."""
    w = word.lower()
    if w in AN_EXCEPTIONS:
        return "an"
    if w.startswith(A_EXCEPTIONS_PREFIX):
        return "a"
    return "an" if w[0] in "aeiou" else "a"


def parse_seed(groups: dict[str, str]) -> list[tuple[str, str, bool, str]]:
    """(word, category, mass, prep) for every seed token, in seed order."""
    out = []
    for cat, text in groups.items():
        for tok in text.split():
            mass = tok.endswith("*")
            tok = tok.rstrip("*")
            word, _, prep = tok.partition("/")
            out.append((word, cat, mass, prep))
    return out


def denied(word: str, pos: str, deny: set[str]) -> bool:
    return word in deny or f"{word}:{pos}" in deny


def deny_set() -> set[str]:
    return {w for text in DENY.values() for w in text.split()}


def inflect(word: str, pos: str, mass: bool) -> dict[str, str] | None:
    """The forms a story needs, or None when lemminflect cannot produce them."""
    from lemminflect import getInflection

    def first(tag: str) -> str:
        forms = getInflection(word, tag)
        return forms[0] if forms else ""

    if pos == "noun":
        forms = {"plural": "" if mass else first("NNS")}
    elif pos == "verb":
        forms = {"third": first("VBZ"), "past": first("VBD"), "past_participle": first("VBN"),
                 "ing": first("VBG")}
        forms["past_participle"] = forms["past_participle"] or forms["past"]
    else:
        forms = {}
    forms.update(OVERRIDES.get((pos, word), {}))
    if any(not v.isalpha() for k, v in forms.items() if not (k == "plural" and mass)):
        return None
    return forms


def known(word: str, pos: str) -> bool:
    """lemminflect lists `word` as a lemma for this part of speech (or it is hand-allowed)."""
    from lemminflect import getAllLemmas

    upos = {"noun": "NOUN", "verb": "VERB", "adjective": "ADJ"}[pos]
    if word in ALLOW or word in getAllLemmas(word, upos=upos).get(upos, ()):
        return True
    # participles used as adjectives (scared, hidden, glowing) are verb forms to lemminflect
    return pos == "adjective" and bool(getAllLemmas(word, upos="VERB"))


def build(min_zipf: float = MIN_ZIPF, cap: int = CAP) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Apply the rules in order; return the rows and, per rule, how many words of each POS survive."""
    from wordfreq import zipf_frequency

    deny = deny_set()
    rows: list[dict] = []
    counts: dict[str, dict[str, int]] = {}
    for pos, groups in (("noun", NOUNS), ("verb", VERBS), ("adjective", ADJECTIVES)):
        cands = parse_seed(groups)
        stages = [("seed", cands)]
        cands = [c for c in cands if re.fullmatch(r"[a-z]{2,}", c[0])]
        stages.append(("format", cands))
        cands = [c for c in cands if not denied(c[0], pos, deny)]
        stages.append(("deny", cands))
        cands = [c for c in cands if known(c[0], pos) and inflect(c[0], pos, c[2]) is not None]
        stages.append(("lexicon", cands))
        zipf = {c[0]: zipf_frequency(c[0], "en") for c in cands}
        cands = [c for c in cands if zipf[c[0]] >= min_zipf]
        stages.append(("frequency", cands))
        seen: set[str] = set()
        uniq = []
        for c in cands:
            if c[0] not in seen:
                seen.add(c[0])
                uniq.append(c)
        stages.append(("dedupe", uniq))
        # stable sort: ties keep seed order, so the output never depends on set ordering
        kept = sorted(uniq, key=lambda c: -zipf[c[0]])[:cap]
        stages.append(("cap", kept))
        for name, lst in stages:
            counts.setdefault(name, {})[pos] = len(lst)
        for word, cat, mass, prep in sorted(kept, key=lambda c: (c[1], c[0])):
            forms = inflect(word, pos, mass) or {}
            rows.append({
                "word": word, "pos": pos, "category": cat, "mass": "1" if mass else "",
                "prep": prep, "article": article(word) if pos != "verb" else "",
                "plural": forms.get("plural", ""), "third": forms.get("third", ""),
                "past": forms.get("past", ""), "past_participle": forms.get("past_participle", ""),
                "ing": forms.get("ing", ""), "zipf": f"{zipf[word]:.2f}",
            })
    return rows, counts


def to_tsv(rows: list[dict]) -> str:
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join(r[c] for c in COLUMNS) for r in rows]
    return "\n".join(lines) + "\n"


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    out = [f"{'rule':<10} {'noun':>6} {'verb':>6} {'adjective':>10}"]
    for rule, c in counts.items():
        out.append(f"{rule:<10} {c['noun']:>6} {c['verb']:>6} {c['adjective']:>10}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="fail if --out differs from a fresh build")
    args = ap.parse_args(argv)
    rows, counts = build()
    print(format_counts(counts))
    text = to_tsv(rows)
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{args.out} is stale: rerun tools/build_vocab.py")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(rows)} words to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
