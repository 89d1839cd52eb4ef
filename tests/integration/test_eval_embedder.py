"""`hybridsearch eval-embedder` and `evaluate_embedder` with real models, English and Chinese.

The labelled sets are written for these tests: four everyday topics (cooking, football,
astronomy, finance), six texts each, in English and in Chinese. Any sentence-embedding
model worth its name separates them; the English-only MiniLM reads Chinese as little more
than characters, which the Chinese m3e-small must beat. No database is involved.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from hybridsearch.cli import main
from hybridsearch.eval import evaluate_embedder
from hybridsearch.eval.classification import ClassificationEvaluation
from hybridsearch.eval.clustering import ClusteringEvaluation
from tests.model_fixtures import m3e_small_path, minilm_path

TOPICS_EN = {
    "cooking": [
        "Knead the dough for ten minutes, then let it rise until doubled.",
        "Simmer the tomato sauce with garlic and basil for half an hour.",
        "Season the steak with salt and sear it in a hot cast-iron pan.",
        "Whisk the eggs and sugar before folding in the flour for the cake.",
        "Roast the vegetables in the oven with olive oil and rosemary.",
        "Chop the onions finely and fry them until golden for the soup.",
    ],
    "football": [
        "The striker scored twice in the second half to win the match.",
        "The goalkeeper saved a penalty in the final minute of the game.",
        "The coach changed the formation after the team conceded an early goal.",
        "Fans filled the stadium to watch the league champions play.",
        "The midfielder was shown a red card for a reckless tackle.",
        "The club signed a young defender during the transfer window.",
    ],
    "astronomy": [
        "The telescope captured images of a distant spiral galaxy.",
        "Jupiter's moons can be seen with a small pair of binoculars.",
        "A supernova explosion briefly outshines its entire galaxy.",
        "Astronomers measured the orbit of a newly discovered exoplanet.",
        "The Milky Way is visible on clear nights far from city lights.",
        "A comet's tail always points away from the Sun.",
    ],
    "finance": [
        "The central bank raised interest rates to curb inflation.",
        "Shares fell sharply after the company reported lower quarterly profits.",
        "Investors moved money into government bonds during the downturn.",
        "The mortgage rate determines how much interest a homeowner pays.",
        "Diversifying a portfolio spreads risk across many assets.",
        "The stock exchange closed higher as bank shares rallied.",
    ],
}

TOPICS_ZH = {
    "烹饪": [
        "把面团揉十分钟，然后让它发酵到两倍大。",
        "番茄酱加大蒜和罗勒小火慢炖半小时。",
        "牛排撒盐后放进烧热的铁锅里煎。",
        "先把鸡蛋和糖打匀，再拌入面粉做蛋糕。",
        "蔬菜淋上橄榄油，放进烤箱烤熟。",
        "洋葱切碎后炒到金黄再加水煮汤。",
    ],
    "足球": [
        "前锋在下半场梅开二度，帮助球队赢得比赛。",
        "守门员在最后一分钟扑出了点球。",
        "球队早早丢球后，教练调整了阵型。",
        "球迷坐满了体育场，观看联赛冠军的比赛。",
        "中场球员因鲁莽的铲球被红牌罚下。",
        "俱乐部在转会窗口签下了一名年轻后卫。",
    ],
    "天文": [
        "望远镜拍到了一个遥远的旋涡星系。",
        "用小型双筒望远镜就能看到木星的卫星。",
        "超新星爆发时的亮度会短暂超过整个星系。",
        "天文学家测量了一颗新发现的系外行星的轨道。",
        "远离城市灯光的晴朗夜晚可以看到银河。",
        "彗星的尾巴总是背向太阳。",
    ],
    "金融": [
        "央行上调利率以抑制通货膨胀。",
        "公司公布季度利润下滑后股价大跌。",
        "经济低迷时投资者把资金转向国债。",
        "房贷利率决定了购房者要支付多少利息。",
        "分散投资组合可以把风险分摊到多种资产上。",
        "银行股走强，股市收盘上涨。",
    ],
}

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def run_cli(*args: str) -> tuple[int, str, str]:
    """``hybridsearch ARGS`` in this process (eval-embedder needs no database)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as env, redirect_stdout(out), redirect_stderr(err):
        env.setenv("HYBRIDSEARCH_TORCH_THREADS", "1")
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def write_labelled(path: Path, topics: dict[str, list[str]], per_label: int = 6) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for label, texts in topics.items():
            for text in texts[:per_label]:
                out.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def english(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled(tmp_path_factory.mktemp("labelled") / "en.jsonl", TOPICS_EN)


@pytest.fixture(scope="module")
def chinese(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled(tmp_path_factory.mktemp("labelled") / "zh.jsonl", TOPICS_ZH)


def test_separated_topics_cluster_well_above_the_shuffled_control(
    english: Path, tmp_path: Path
) -> None:
    code, stdout, stderr = run_cli(
        "eval-embedder",
        "--task",
        "clustering",
        "--data",
        str(english),
        "--model",
        MINILM,
        "--json",
        str(tmp_path / "out.json"),
        "--plot",
        str(tmp_path / "plots" / "clusters.png"),
        "--report",
        str(tmp_path / "report.md"),
    )
    assert code == 0, stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["model"] == MINILM and result["labels"] == 4 and result["items"] == 24
    scores, control = result["scores"], result["control"]
    assert scores["purity"] >= 0.9 and scores["ari"] >= 0.7
    assert scores["purity"] > control["purity"] + 0.3
    assert scores["nmi"] > control["nmi"] + 0.5
    assert abs(control["ari"]) < 0.2  # shuffled labels: no structure left to find
    assert "purity" in stdout and "shuffled labels" in stdout
    assert (tmp_path / "plots" / "clusters.png").read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "report.md").read_text()
    assert report.startswith(f"# Clustering of embedding model `{MINILM}`")
    assert f"| purity | {scores['purity']:.4f} | {control['purity']:.4f} |" in report
    assert "![clustering figures](plots/clusters.png)" in report


def test_the_same_seed_gives_the_same_clusters(english: Path) -> None:
    first = evaluate_embedder("clustering", english, model=MINILM, seed=3)
    again = evaluate_embedder("clustering", english, model=MINILM, seed=3)
    assert isinstance(first, ClusteringEvaluation) and isinstance(again, ClusteringEvaluation)
    assert first.scores == again.scores and first.control == again.control


def test_classification_beats_the_majority_class_with_folds_from_the_data(
    english: Path, tmp_path: Path
) -> None:
    result = evaluate_embedder("classification", english, model=MINILM)
    assert isinstance(result, ClassificationEvaluation)
    assert result.folds == 5  # six texts per label: the default five folds fit
    assert len(result.scores["accuracy"].folds) == 5
    assert result.scores["accuracy"].mean >= 0.9
    assert result.scores["macro_f1"].mean > result.control["macro_f1"].mean + 0.5
    assert result.control["accuracy"].mean < 0.4  # four balanced labels
    small = write_labelled(tmp_path / "small.jsonl", TOPICS_EN, per_label=3)
    fewer = evaluate_embedder("classification", small, model=MINILM)
    assert isinstance(fewer, ClassificationEvaluation) and fewer.folds == 3


def test_the_chinese_model_beats_the_english_one_on_chinese_text(chinese: Path) -> None:
    figures = {}
    for name, model in (("m3e", str(m3e_small_path())), ("minilm", str(minilm_path()))):
        clusters = evaluate_embedder("clustering", chinese, model=model)
        classes = evaluate_embedder("classification", chinese, model=model)
        assert isinstance(clusters, ClusteringEvaluation)
        assert isinstance(classes, ClassificationEvaluation)
        figures[name] = (clusters.scores, classes.scores["macro_f1"].mean)
    (m3e_clusters, m3e_f1), (minilm_clusters, minilm_f1) = figures["m3e"], figures["minilm"]
    assert m3e_clusters["purity"] >= 0.9
    assert m3e_clusters["nmi"] > minilm_clusters["nmi"] + 0.2
    assert m3e_clusters["ari"] > minilm_clusters["ari"] + 0.2
    assert m3e_f1 > minilm_f1 + 0.2


STS_PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar.", 5.0),
    ("Two dogs run across a field.", "Dogs are running on the grass.", 4.0),
    ("The cat sleeps on the sofa.", "A dog sleeps on the couch.", 2.4),
    ("A plane is taking off.", "A bird flies over the lake.", 1.2),
    ("Protein folding depends on temperature.", "Kids play football after school.", 0.0),
]


def test_sts_task_is_eval_sts(tmp_path: Path) -> None:
    pairs = tmp_path / "sts.tsv"
    pairs.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in STS_PAIRS))
    outputs = {}
    for command, flag in (("eval-sts", "--pairs"), ("eval-embedder", "--data")):
        task = ["--task", "sts"] if command == "eval-embedder" else []
        out = tmp_path / f"{command}.json"
        code, _, stderr = run_cli(command, *task, flag, str(pairs), "--json", str(out))
        assert code == 0, stderr
        outputs[command] = json.loads(out.read_text())
    assert outputs["eval-embedder"]["task"] == "sts"
    for key in ("pairs", "spearman", "pearson"):
        assert outputs["eval-embedder"][key] == outputs["eval-sts"][key]
    assert outputs["eval-sts"]["spearman"] > 0.5


def _beir(folder: Path, docs: dict[str, str], queries: dict[str, str], relevant: str) -> Path:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for doc, text in docs.items():
            out.write(json.dumps({"_id": doc, "title": "", "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as out:
        for qid, text in queries.items():
            out.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + relevant)
    return folder


def test_domain_check_puts_both_sets_side_by_side_with_the_drop(tmp_path: Path) -> None:
    general = _beir(
        tmp_path / "general",
        {f"g{i}": text for i, texts in enumerate(TOPICS_EN.values()) for text in texts[:1]},
        {"q0": "how to bake bread at home", "q1": "who won the football match"},
        "q0\tg0\t1\nq1\tg1\t1\n",
    )
    domain = _beir(
        tmp_path / "domain",
        {
            "d1": "Troponin elevation after percutaneous coronary intervention.",
            "d2": "ALDH1 expression marks stem cells in breast carcinoma.",
            "d3": "Statins lower LDL cholesterol by inhibiting HMG-CoA reductase.",
        },
        {"p1": "heart muscle damage marker after stenting", "p2": "cholesterol drugs"},
        "p1\td1\t1\np2\td3\t1\np2\tnot-in-corpus\t1\n",
    )
    out = tmp_path / "domain.json"
    code, stdout, stderr = run_cli(
        "eval-embedder",
        "--task",
        "domain",
        "--data",
        str(domain),
        "--general",
        str(general),
        "--metrics",
        "ndcg@10,recall@10,mrr@10",
        "--model",
        MINILM,
        "--json",
        str(out),
        "--report",
        str(tmp_path / "domain.md"),
    )
    assert code == 0, stderr
    result = json.loads(out.read_text())
    general_metrics, domain_metrics = result["general"]["metrics"], result["domain"]["metrics"]
    assert list(general_metrics) == ["ndcg@10", "recall@10", "mrr@10"]
    assert general_metrics["mrr@10"] == 1.0  # each everyday query finds its text first
    for metric, drop in result["drop"].items():
        assert drop == pytest.approx(general_metrics[metric] - domain_metrics[metric])
    # the judged document missing from the domain corpus is kept: p2 can recall half at most
    assert result["domain"]["input"]["missing_documents"]["count"] == 1
    assert domain_metrics["recall@10"] == pytest.approx(0.75)
    assert result["drop"]["recall@10"] == pytest.approx(0.25)
    assert "relative drop" in stdout and "not in the corpus" in stdout
    assert (
        "| recall@10 | 1.0000 | 0.7500 | +0.2500 | +25.0% |" in (tmp_path / "domain.md").read_text()
    )


@pytest.mark.parametrize(
    ("lines", "args", "message"),
    [
        ([], ["--task", "clustering"], "holds no labelled text"),
        (['{"text": "x"}'], ["--task", "clustering"], "no usable labelled text"),
        (
            [json.dumps({"text": t, "label": "one"}) for t in ("a", "b", "c")],
            ["--task", "classification"],
            "at least 2 labels",
        ),
        (
            [json.dumps({"text": t, "label": t[0]}) for t in ("a1", "a2", "b1", "b2", "b3")],
            ["--task", "classification", "--folds", "3"],
            "3 folds need at least 3 texts of every label, but label 'a' has 2",
        ),
        (
            [json.dumps({"text": t, "label": t[0]}) for t in ("a1", "b1", "b2")],
            ["--task", "classification"],
            "label 'a' has 1 text",
        ),
        (
            [json.dumps({"text": "a", "label": "x"})],
            ["--task", "clustering", "--general", "."],
            "general is an option of the domain task",
        ),
        ([], ["--task", "domain"], "needs a general set"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, lines: list[str], args: list[str], message: str
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(line + "\n" for line in lines))
    target = str(tmp_path) if "domain" in args else str(data)
    code, stdout, stderr = run_cli("eval-embedder", *args, "--data", target, "--model", MINILM)
    assert code == 2, stdout
    assert stderr.startswith("hybridsearch: error:") and stderr.count("\n") == 1
    assert message in stderr


def test_skipped_lines_are_listed_and_the_rest_evaluated(english: Path, tmp_path: Path) -> None:
    messy = tmp_path / "messy.jsonl"
    messy.write_text(english.read_text() + "not json\n" + '{"label": "cooking"}\n')
    code, stdout, stderr = run_cli(
        "eval-embedder", "--task", "clustering", "--data", str(messy), "--model", MINILM
    )
    assert code == 0, stderr
    assert "24 texts, 4 labels" in stdout
    assert "1 × labelled line is not valid JSON" in stdout
    assert f"{messy}:26" in stdout
