"""Data designs as data: a folder of files (template, word list, features, topics) named by `data.design`,
checked when the profile is, keyed by content, and the customer_service example end to end through a local
OpenAI-compatible server."""

from __future__ import annotations

import random
import shutil
import time

import pytest

from tests.openai_server import FakeOpenAI
from tinystories_lib import params, stages
from tinystories_lib.params import ParamsError
from tinystories_lib.runs import Run
from tinystories_lib.stories.prompts import (
    DESIGNS_DIR,
    TINYSTORIES_DIGEST,
    DesignError,
    PromptSpec,
    default_design,
    load_design,
    sample_prompts,
)
from tinystories_lib.stories.records import read_jsonl

SHIPPED = DESIGNS_DIR / "customer_service"


def _copy(tmp_path, name="customer_service"):
    dst = tmp_path / "designs" / name
    shutil.copytree(DESIGNS_DIR / name, dst)
    return dst


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _load(design, **more):
    return params.load("customer_service", {"data.design": str(design), **more})


# ---------------------------------------------------------------- each check, named by file


def _template(d):
    return d / "prompt.txt"


CASES = [  # (what to break, the file the message must name, what it must say)
    ("manifest_missing", lambda d: (d / "design.yaml").unlink(), "design.yaml", "not found"),
    ("manifest_yaml", lambda d: _edit(d / "design.yaml", "feature_prob: 0.4", "feature_prob: [0.4"),
     "design.yaml", "not valid YAML"),
    ("manifest_key", lambda d: _edit(d / "design.yaml", "feature_prob:", "feature_prop:"),
     "design.yaml", "unknown key 'feature_prop' (did you mean 'feature_prob'?)"),
    ("manifest_not_mapping", lambda d: (d / "design.yaml").write_text("- a\n- b\n"), "design.yaml", "YAML mapping"),
    ("feature_twice", lambda d: _edit(d / "design.yaml", "  apology:", "  needs_refund: again\n  apology:"),
     "design.yaml", "key 'needs_refund' is given twice"),
    ("feature_prob", lambda d: _edit(d / "design.yaml", "feature_prob: 0.4", "feature_prob: 1.5"),
     "design.yaml", "feature_prob must be a number in [0, 1]"),
    ("feature_name", lambda d: _edit(d / "design.yaml", "  apology:", "  Apology Now:"),
     "design.yaml", "feature name 'Apology Now'"),
    ("feature_wording", lambda d: _edit(d / "design.yaml", "apology: the agent apologizes for the trouble", "apology:"),
     "design.yaml", "feature 'apology' needs its prompt wording"),
    ("features_not_mapping", lambda d: _edit(d / "design.yaml", "features:\n  angry_customer:", "features: 3\nx:\n  angry_customer:"),
     "design.yaml", "unknown key 'x'"),
    ("template_missing", lambda d: _template(d).unlink(), "prompt.txt", "the prompt template not found"),
    ("template_empty", lambda d: _template(d).write_text("\n"), "prompt.txt", "the template is empty"),
    ("unknown_placeholder", lambda d: _edit(_template(d), "{product} that", "{colour} {product} that"),
     "prompt.txt", "unknown placeholder {colour}"),
    ("misspelt_placeholder", lambda d: _edit(_template(d), "{product} that", "{prodcut} {product} that"),
     "prompt.txt", "did you mean {product}?"),
    ("missing_slot", lambda d: _template(d).write_text(_template(d).read_text().replace("{action}", "help")),
     "prompt.txt", "the template has no {action}"),
    ("missing_features", lambda d: _edit(_template(d), "[[ The call has the following features: {features}.]]", ""),
     "prompt.txt", "the template has no {features}"),
    ("missing_topic", lambda d: _edit(_template(d), " Topic of the call: {topic}.", ""),
     "prompt.txt", "the template has no {topic}"),
    ("topic_without_topics", lambda d: _edit(d / "design.yaml", "topics: topics.txt\n", ""),
     "prompt.txt", "unknown placeholder {topic} (design.yaml names no topics file)"),
    ("features_without_features", lambda d: (d / "design.yaml").write_text(
        "template: prompt.txt\nwords: words.tsv\ntopics: topics.txt\n"),
     "prompt.txt", "unknown placeholder {features} (design.yaml lists no features)"),
    ("stray_brace", lambda d: _edit(_template(d), "Call:", "Call: {"), "prompt.txt", "a literal brace is written"),
    ("format_spec", lambda d: _edit(_template(d), "a {product} that", "a {product:>9} that"),
     "prompt.txt", "is not plain; write {product}"),
    ("unbalanced", lambda d: _edit(_template(d), "{features}.]]", "{features}."), "prompt.txt", "unbalanced or nested"),
    ("features_not_optional", lambda d: _edit(_template(d), "[[ The call has the following features: {features}.]]",
                                              " The call has the following features: {features}."),
     "prompt.txt", "put the sentence holding it in [[ ... ]]"),
    ("words_missing", lambda d: (d / "words.tsv").unlink(), "words.tsv", "the word list not found"),
    ("words_header", lambda d: (d / "words.tsv").write_text("laptop\tproduct\n"), "words.tsv", "needs a header line"),
    ("words_empty", lambda d: (d / "words.tsv").write_text("word\tpos\n"), "words.tsv", "the word list has no words"),
    ("words_row", lambda d: _edit(d / "words.tsv", "tablet\tproduct", "tablet\t"), "words.tsv, line 4",
     "needs both a word and its pos"),
    ("words_pos_name", lambda d: _edit(d / "words.tsv", "tablet\tproduct", "tablet\tProduct Name"), "words.tsv, line 4",
     "pos 'Product Name'"),
    ("words_reserved_pos", lambda d: _edit(d / "words.tsv", "tablet\tproduct", "tablet\ttopic"), "words.tsv, line 4",
     "not features or topic"),
    ("words_twice", lambda d: _edit(d / "words.tsv", "tablet\tproduct", "laptop\tproduct"), "words.tsv, line 4",
     "'laptop' (product) is listed twice (also line 2)"),
    ("words_new_pos", lambda d: _edit(d / "words.tsv", "tablet\tproduct", "tablet\tgadget"), "prompt.txt",
     "the template has no {gadget}, so the word list's part of speech 'gadget' would never reach a prompt"),
    ("topics_missing", lambda d: (d / "topics.txt").unlink(), "topics.txt", "the topics list not found"),
    ("topics_empty", lambda d: (d / "topics.txt").write_text("# nothing yet\n\n"), "topics.txt", "the topics list is empty"),
    ("topics_twice", lambda d: (d / "topics.txt").write_text("a refund\na late parcel\na refund\n"), "topics.txt, line 3",
     "topic 'a refund' is listed twice (also line 1)"),
]


@pytest.mark.parametrize("name,breaks,file,says", CASES, ids=[c[0] for c in CASES])
def test_each_design_check_names_the_file_and_what_to_do(tmp_path, name, breaks, file, says):
    d = _copy(tmp_path)
    load_design(d)  # the copy itself is valid
    breaks(d)
    with pytest.raises(DesignError) as e:
        load_design(d)
    assert f"{d}/{file}" in str(e.value) and says in str(e.value), str(e.value)
    # ... and `params check` refuses the profile with the same message, under the key.
    with pytest.raises(ParamsError) as e2:
        _load(d)
    assert "data.design: " in str(e2.value) and f"{d}/{file}" in str(e2.value) and says in str(e2.value)


def test_a_design_folder_that_is_not_there(tmp_path):
    with pytest.raises(ParamsError, match=r"data.design: design folder .*no-such-design not found; give a shipped "
                                          r"design \(customer_service, tinystories\)"):
        _load("no-such-design")
    with pytest.raises(ParamsError, match="design folder .*/designs/elsewhere not found"):
        _load(tmp_path / "designs" / "elsewhere")


def test_a_design_is_for_llm_prompts_and_caps_n_stories(tmp_path):
    with pytest.raises(ParamsError, match="data.design: 'customer_service' makes prompts for data.source llm only.*"
                                          "got data.source 'storyteller'"):
        params.load("customer_service", {"data.source": "storyteller"})
    d = _copy(tmp_path)
    (d / "words.tsv").write_text("word\tpos\nlaptop\tproduct\nbroken\tproblem\nreset\taction\nrepair\taction\n")
    (d / "topics.txt").write_text("a gift\n")
    _edit(d / "design.yaml", "feature_prob: 0.4", "feature_prob: 0.0")  # no feature sets: 1 x 1 x 2 x 1 = 2
    assert load_design(d).capacity() == 2
    assert len(_load(d, **{"data.n_stories": 2}).data.prompt_design().words) == 3
    with pytest.raises(ParamsError, match=r"data.n_stories: the customer_service design makes only 2 distinct prompts"):
        _load(d, **{"data.n_stories": 3})
    # A path to a design is from the repository root or absolute; the shipped name and its path agree.
    assert params.load("customer_service", {"data.design": str(SHIPPED.relative_to(params.REPO_ROOT))}) \
        .data.prompt_design().digest == load_design(SHIPPED).digest


# ---------------------------------------------------------------- the default design is the paper's


def test_the_default_design_is_the_papers_prompt_from_files():
    d = default_design()
    assert d.digest == TINYSTORIES_DIGEST  # the shipped files: update the constant only on purpose
    assert d.slots == ("noun", "verb", "adjective") and [len(w) for w in d.words] == [500, 500, 500]
    assert params.load("tiny").data.design == "tinystories"
    spec = PromptSpec("p000000", noun="foot", verb="hang", adjective="cute", features=("dialogue",))
    assert spec.render() == d.render(spec) == (
        "Write a short story (3-5 paragraphs) which only uses very simple words that a 3 year old child "
        'would understand. The story should use the verb "hang", the noun "foot" and the adjective "cute". '
        "The story has the following features: the story should contain at least one dialogue. "
        "Remember to only use simple words!\n\nPossible story:")


def test_a_copy_of_the_default_design_renders_from_its_own_files(tmp_path):
    d = _copy(tmp_path, "tinystories")
    shutil.copy(DESIGNS_DIR.parent / "vocab.tsv", tmp_path / "vocab.tsv")  # its manifest names ../../vocab.tsv
    assert load_design(d).digest == TINYSTORIES_DIGEST  # same content, same digest, wherever it is
    _edit(d / "prompt.txt", "Possible story:", "A story:")
    _edit(d / "design.yaml", "the story has a bad ending", "the story ends badly")
    copy = load_design(d)
    spec = sample_prompts(1, seed=3, feature_prob=1.0, design=copy)[0]
    assert spec.render().endswith("at least one dialogue, the story ends badly, the story has a moral value, "
                                  "something unexpected happens in the story, the narrative uses foreshadowing, the "
                                  "story has some form of conflict. Remember to only use simple words!\n\nA story:")
    assert (spec.noun, spec.verb, spec.adjective) == (lambda s: (s.noun, s.verb, s.adjective))(
        sample_prompts(1, seed=3, feature_prob=1.0)[0])  # same words drawn: same word lists, same order


# ---------------------------------------------------------------- the design's content is in artifact keys


def test_the_design_content_is_part_of_the_artifact_keys(tmp_path):
    def keys(design):
        run = Run.load("customer_service", {"data.design": str(design)}, runs_root=tmp_path / "runs",
                       figures_root=tmp_path / "figs")
        return stages.llm_stories_path(run).parent.name, run.params.section_hash("data"), \
            run.params.section_hash("data", "tokenizer")

    d = _copy(tmp_path)
    before = keys(d)
    assert keys("customer_service") == before  # a copy with the same content is the same data

    moved = tmp_path / "elsewhere" / "calls"
    shutil.copytree(d, moved)
    assert keys(moved) == before  # where the folder is, or what it is called, does not count
    _edit(d / "design.yaml", "# A worked example", "# An edited comment on a worked example")
    _edit(d / "design.yaml", "description: Short", "description: Very short")
    (d / "README.md").write_text("notes about this design\n")
    assert keys(d) == before  # comments, the description and other files do not decide a prompt

    for path, old, new in ((d / "words.tsv", "tablet\tproduct", "drone\tproduct"),
                           (d / "prompt.txt", "Call:", "Transcript:"),
                           (d / "design.yaml", "the customer is angry at first", "the customer is furious"),
                           (d / "design.yaml", "feature_prob: 0.4", "feature_prob: 0.3"),
                           (d / "topics.txt", "a first order from the shop", "a first order")):
        _edit(path, old, new)
        after = keys(d)
        assert all(a != b for a, b in zip(after, before)), (path, old)  # the stories and all built on them
        before = after


def test_the_default_design_leaves_keys_as_they_were(tmp_path):
    run = Run.load("tiny", {"data.source": "llm"}, runs_root=tmp_path / "runs", figures_root=tmp_path / "figs")
    d = run.params.data
    assert d.key_extra() == {}
    # The key of LLM stories under the paper's design is the one from before designs were files.
    legacy = run.params.section_hash(extra={"llm_stories": params._what(d.llm), "summaries": d.llm_summaries})
    assert stages.llm_stories_path(run).parent.name == legacy
    assert "design" not in params._what(d)


# ---------------------------------------------------------------- the second domain, end to end


class CallWriter:
    """A fake support-call LLM: for a prompt of `specs` it writes a call that uses the spec's three words,
    its lines labelled Customer: / Agent:."""

    def __init__(self, specs):
        self.by_prompt = {s.render(): s for s in specs}

    def __call__(self, messages: list) -> str:
        spec = self.by_prompt.get(messages[-1]["content"])
        if spec is None:
            return "Customer: Hello? Agent: Hello, how can I help?"
        rng = random.Random(spec.id)
        w = spec.words
        lines = [f"Customer: Hi, my {w['product']} is {w['problem']} and I need help today.",
                 f"Agent: I am sorry to hear that. Let me {w['action']} it for you right away."]
        filler = ("order number", "this morning", "the box", "the screen", "my account", "the light", "the email",
                  "the invoice", "next week", "the settings", "the store", "my address", "the cable", "the app")
        for i in range(8):
            who = "Customer" if i % 2 else "Agent"
            lines.append(f"{who}: I checked {rng.choice(filler)} and {rng.choice(filler)}, then {rng.choice(filler)}.")
        lines.append("Agent: Thank you for calling. Have a good day.")
        return "\n".join(lines)


def test_customer_service_calls_end_to_end_through_a_local_server(tmp_path, monkeypatch):
    """A few hundred calls from the customer_service profile through a local OpenAI-compatible server: the
    prompts sent carry the domain's template, words, features and topics, and every call lands in the
    corpus with its words and features."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs none
    n = 300
    design = load_design(SHIPPED)
    specs = sample_prompts(n, seed=params.load("customer_service").seed, design=design)
    with FakeOpenAI(reply=CallWriter(specs)) as server:
        over = {"data.n_stories": n, "data.llm.base_url": server.base_url, "data.llm.model": "fake-agent"}
        run = Run.load("customer_service", over, runs_root=tmp_path / "runs", figures_root=tmp_path / "figs")
        t0 = time.perf_counter()
        out = stages.corpus(run, progress=False)
        assert time.perf_counter() - t0 < 60
        sent = [r.json["messages"][-1]["content"] for r in server.chat_requests]
    assert len(sent) == n and set(sent) == {s.render() for s in specs}
    words = dict(zip(design.slots, (set(ws) for ws in design.words)))
    for spec in specs:
        p = spec.render()
        assert p.startswith("Write a short phone call") and "3 year old" not in p and p.endswith("Call:")
        assert set(spec.words) == {"product", "problem", "action"}
        assert all(spec.words[s] in words[s] and f'"{spec.words[s]}"' in p for s in design.slots)
        assert spec.topic in design.topics and f"Topic of the call: {spec.topic}." in p
        assert ("The call has the following features:" in p) == bool(spec.features)
    wordings = dict(zip(design.features, design.feature_text))
    asked = {f for s in specs for f in s.features}
    assert asked == set(design.features)
    assert any(wordings["clarifying_question"] in p for p in sent)
    assert len({s.topic for s in specs}) == len(design.topics)  # 300 draws reach each of the 16 topics

    stories = list(read_jsonl(out / "train.jsonl")) + list(read_jsonl(out / "val.jsonl"))
    assert len(stories) == n and {s.id for s in stories} == {s.id for s in specs}
    by_id = {s.id: s for s in specs}
    for story in stories:
        spec = by_id[story.id]
        assert story.source == "fake-agent" and story.prompt == spec.render()
        assert story.words == spec.words and story.features == list(spec.features)
        assert story.text.startswith("Customer: Hi, my ")
    assert Run.artifact(out)["n_train"] + Run.artifact(out)["n_val"] == n
    # The stories are keyed by the design: they sit under its key, not the TinyStories one.
    assert stages.llm_stories_path(run).exists() and run.params.data.key_extra() == {"design_digest": design.digest}


@pytest.mark.slow
def test_data_notebook_on_the_customer_service_profile(tmp_path, monkeypatch):
    """Notebook 01 runs on the customer_service profile (papermill, a local server writing the calls)."""
    import nbformat

    from tinystories_lib.reproduce import reproduce

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    n = 300  # a few hundred calls, storyteller-free, through the local server
    specs = sample_prompts(n, seed=params.load("customer_service").seed, design=load_design(SHIPPED))
    with FakeOpenAI(reply=CallWriter(specs)) as server:
        over = {"data.n_stories": n, "data.llm.base_url": server.base_url, "data.llm.model": "fake-agent"}
        reproduce("customer_service", only=["01"], overrides=over, runs_root=tmp_path / "runs",
                  figures_root=tmp_path / "figures", log_output=False)
        assert len(server.chat_requests) == n
    nb = nbformat.read(tmp_path / "runs" / "customer_service" / "notebooks" / "01_data_creation.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "[fake-agent]" in text and "Customer: Hi, my " in text and "records in" in text
    assert "the storyteller writes children's stories only" in text  # the prompt cell: no children's story
    md = "".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
    assert "prompt vocabulary used: products" in md and "prompt vocabulary used: nouns" not in md
    assert (tmp_path / "figures" / "customer_service" / "corpus_overview.png").exists()


def test_vocabulary_use_counts_the_designs_own_slots():
    from tinystories_lib.stories.corpus_stats import vocab_coverage
    from tinystories_lib.stories.records import Story

    design = load_design(SHIPPED)
    calls = [Story(id="1", text="Customer: Hi, my laptop is broken and my phones are frozen.", source="t")]
    got = vocab_coverage(calls, design)
    assert list(got) == list(design.slots)
    products = design.words[design.slots.index("product")]
    assert got["product"] == pytest.approx(2 / len(products))  # laptop, and phone by its plural
    assert got["problem"] == pytest.approx(2 / len(design.words[design.slots.index("problem")]))
    assert set(vocab_coverage(calls)) == {"noun", "verb", "adjective"}  # the paper's, by default
