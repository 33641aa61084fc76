"""The built-in text embedding (exporter.signals.embedding): pinned outputs, geometry, evidence.

Its agreement with the plain reference implementation, and of batches with single texts, is
in tests/test_embedding_reference.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.signals.embedding import (
    MAX_CHARS,
    FeatureShift,
    TextEmbedder,
    top_features,
    vector_from_record,
)

ROOT = Path(__file__).resolve().parent.parent

BILLING = [
    "Your invoice shows a duplicate charge, so we have issued a refund to your credit card.",
    "The payment failed because the card on file expired. Please update your billing details.",
    "We refunded the overcharge on your last invoice; the credit appears in 5 business days.",
    "Your subscription renews monthly and the charge appears on your statement as ACME.",
    "I have applied a credit to your account for the billing error on the March invoice.",
    "The refund for the double payment has been processed and will show on your card soon.",
    "Your card was charged twice for the same invoice; the second charge will be reversed.",
    "To change the payment method for your subscription, open Billing and choose a new card.",
]
SHIPPING = [
    "Your parcel has shipped and the tracking number shows it is in transit to the depot.",
    "The courier attempted delivery but nobody was home; the package is at the pickup point.",
    "Orders placed before noon ship the same day; delivery takes two to four business days.",
    "Your package was delayed at customs and the carrier expects delivery next week.",
    "We sent a replacement shipment; tracking is emailed once the parcel leaves the warehouse.",
    "The delivery address on the shipping label was incomplete, so the courier returned it.",
    "Your order is packed and waiting for the carrier; expect a tracking link this evening.",
    "Express shipping delivers the package within one business day to most addresses.",
]
ENGLISH = [
    "The weather is nice today and we are going for a walk in the park.",
    "Please send me the report by Friday so that I can review it before the meeting.",
    "The train was late again this morning because of a signal failure near the station.",
    "We need to decide which supplier offers the better price for the new office chairs.",
    "Thank you for your message; I will get back to you as soon as I have more details.",
    "The children played in the garden until it started to rain in the late afternoon.",
    "Our team will present the results of the survey at the next quarterly review.",
    "If you have any questions about the new schedule, please ask your manager.",
    "The museum is closed on Mondays, but it stays open late on Thursday evenings.",
    "She has been working on this project for three years and it is almost finished.",
]
GERMAN = [
    "Das Wetter ist heute schön und wir gehen im Park spazieren.",
    "Bitte schicken Sie mir den Bericht bis Freitag, damit ich ihn vor dem Treffen prüfen kann.",
    "Der Zug hatte heute Morgen wegen einer Signalstörung am Bahnhof wieder Verspätung.",
    "Wir müssen entscheiden, welcher Lieferant den besseren Preis für die neuen Stühle bietet.",
    "Vielen Dank für Ihre Nachricht; ich melde mich, sobald ich mehr Einzelheiten habe.",
    "Die Kinder spielten im Garten, bis es am späten Nachmittag zu regnen begann.",
    "Unser Team stellt die Ergebnisse der Umfrage bei der nächsten Quartalsbesprechung vor.",
    "Wenn Sie Fragen zum neuen Zeitplan haben, wenden Sie sich bitte an Ihre Vorgesetzte.",
    "Das Museum ist montags geschlossen, hat aber donnerstags bis spät abends geöffnet.",
    "Sie arbeitet seit drei Jahren an diesem Projekt, und es ist fast fertig.",
]
CHINESE = [  # the fullwidth commas are real Chinese punctuation, hence the noqa
    "今天天气很好，我们去公园散步。",  # noqa: RUF001
    "请在星期五之前把报告发给我，以便我在会议前审阅。",  # noqa: RUF001
    "今天早上火车又因为车站附近的信号故障晚点了。",
    "我们需要决定哪家供应商为新办公椅提供更好的价格。",
    "谢谢你的留言，我一有更多细节就会回复你。",  # noqa: RUF001
    "孩子们在花园里玩耍，直到傍晚开始下雨。",  # noqa: RUF001
    "我们的团队将在下一次季度评审中介绍调查结果。",
    "如果你对新的时间表有任何问题，请询问你的经理。",  # noqa: RUF001
    "博物馆星期一闭馆，但星期四晚上开放到很晚。",  # noqa: RUF001
    "她已经在这个项目上工作了三年，现在快完成了。",  # noqa: RUF001
]
# The same assistant boilerplate around different subjects: a topic-mix change.
FRAMES = [
    "Thanks for reaching out. {a} {b}",
    "I checked your account and {a} {b} Let me know if there is anything else.",
    "Sorry for the trouble! {a} {b}",
    "Good news: {a} {b} Have a great day.",
    "{a} {b} Is there anything else I can help you with today?",
]
PHRASES = {
    "billing": [
        "Your invoice shows a duplicate charge, so a refund is on its way.",
        "The payment failed because the card on file has expired.",
        "We refunded the overcharge from your last invoice.",
        "Your subscription renews monthly and the charge appears on your statement.",
        "A credit has been applied to your account for the billing error.",
        "The second charge on your card will be reversed within five business days.",
        "You can change the payment method under Billing settings.",
        "The refund was issued to the original credit card.",
        "Your plan was downgraded, so the next invoice will be lower.",
        "The tax on the invoice was calculated for your billing address.",
    ],
    "shipping": [
        "Your parcel has shipped and the tracking number shows it in transit.",
        "The courier tried to deliver the package but nobody was home.",
        "Orders placed before noon ship the same day.",
        "The package was held at customs and the carrier expects delivery next week.",
        "A replacement shipment leaves the warehouse tomorrow.",
        "The shipping label had an incomplete address, so the parcel was returned.",
        "Your order is packed and waiting for the carrier to collect it.",
        "Express shipping delivers within one business day.",
        "The tracking page shows the parcel at the local depot.",
        "You can pick the package up at the nearest collection point.",
    ],
}


def topic_texts(topic: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        rng.choice(FRAMES).format(a=a, b=b)
        for a, b in (rng.sample(PHRASES[topic], 2) for _ in range(n))
    ]


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder()


def centroid(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    return mean / np.linalg.norm(mean)


def assert_groups_separate(
    embedder: TextEmbedder, groups: dict[str, list[str]], margin: float, hits: float
) -> None:
    """The groups are distinguishable as samples, which is what a drift detector compares: the
    centroids of two halves of a group agree better, by `margin`, than with another group's
    half, and a share `hits` of single texts is nearest its own group's centroid (computed
    without it). Single short texts are noisy at 256 dimensions (hash collisions), so not all
    need to be. The margins asked for hold for each of 20 seeds, not only the default one."""
    vectors = {name: embedder.embed_many(texts) for name, texts in groups.items()}
    for name, own in vectors.items():
        others = {other: v for other, v in vectors.items() if other != name}
        same_half = float(centroid(own[0::2]) @ centroid(own[1::2]))
        other_half = max(float(centroid(own[0::2]) @ centroid(v[1::2])) for v in others.values())
        assert same_half > other_half + margin, (name, same_half, other_half)
        nearest_own = sum(
            float(vec @ centroid(np.delete(own, i, axis=0)))
            > max(float(vec @ centroid(v)) for v in others.values())
            for i, vec in enumerate(own)
        )
        assert nearest_own >= hits * len(own), (name, nearest_own)


# --- determinism --------------------------------------------------------------------------

DETERMINISM_TEXTS = [
    "Your refund of $42.50 was issued to the card ending 1234.",
    '{"status": "ok", "items": [1, 2, 3]}',
    "退款已于今天处理完毕。",
    "Die Lieferung verzögert sich um zwei Tage.",
    "",
    "x" * (MAX_CHARS + 500),
]


def digest(vectors: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(vectors, dtype=np.float32).tobytes()).hexdigest()


def test_identical_in_a_subprocess_with_another_hash_seed(embedder: TextEmbedder) -> None:
    script = (
        "import json, sys, hashlib\n"
        "from exporter.signals.embedding import TextEmbedder\n"
        "texts = json.loads(sys.stdin.read())\n"
        "vecs = TextEmbedder().embed_many(texts)\n"
        "print(hashlib.sha256(vecs.tobytes()).hexdigest())\n"
    )
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(DETERMINISM_TEXTS),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        )
        assert result.stdout.strip() == digest(embedder.embed_many(DETERMINISM_TEXTS))


# Pinned outputs: a change here means every stored baseline would silently shift. If the change
# is intended (a new algorithm), bump these values and say so in the release notes.
GOLDEN_SHA256 = {
    DETERMINISM_TEXTS[0]: "8e54311503406534b2d59a74b9a90009912d87cb874d9075a6f3f09c3246ead7",
    DETERMINISM_TEXTS[1]: "33a5ed5bfa81443a3673ba7a714b862cc415a9d0edb8f2c6b2ecd38b35007b3c",
    DETERMINISM_TEXTS[2]: "aaf243303c0c1a62c2b717e826d78839cd0238cd39ff478cc6158fb5ec7b94b5",
    DETERMINISM_TEXTS[3]: "f7e380f4f9aedb55699e4dd8a9c14d3836a7040b246381237075da150beb6161",
}
GOLDEN_COMPONENTS = {
    DETERMINISM_TEXTS[0]: {4: -0.14744195342063904, 6: 0.07372097671031952, 7: -0.07372097671031952}
}


@pytest.mark.parametrize("text", list(GOLDEN_SHA256))
def test_golden_vectors(embedder: TextEmbedder, text: str) -> None:
    vec = embedder.embed(text)
    for index, value in GOLDEN_COMPONENTS.get(text, {}).items():
        assert vec[index] == pytest.approx(value, abs=1e-6), "algorithm changed"
    assert digest(vec) == GOLDEN_SHA256[text], "bits changed (numpy or platform difference?)"


def test_seed_and_dimension_change_the_vector() -> None:
    text = DETERMINISM_TEXTS[0]
    base = TextEmbedder().embed(text)
    assert not np.array_equal(base, TextEmbedder(seed=7).embed(text))
    small = TextEmbedder(dimension=64).embed(text)
    assert small.shape == (64,)
    assert np.linalg.norm(small) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("dimension", [0, 8, 100, 255, 8192])
def test_dimension_must_be_a_power_of_two_in_range(dimension: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        TextEmbedder(dimension=dimension)


def test_embed_many_is_bit_identical_to_embed(embedder: TextEmbedder) -> None:
    texts = [*DETERMINISM_TEXTS, *BILLING, *CHINESE, "a 中 b", "z", " ", "\n"] * 3
    texts += ["word " * 900, "mixed 中文 text " * 50]  # long texts pack alone
    many = embedder.embed_many(texts)
    assert many.shape == (len(texts), 256)
    assert many.dtype == np.float32
    assert np.array_equal(many, np.stack([embedder.embed(t) for t in texts]))
    assert embedder.embed_many([]).shape == (0, 256)
    assert np.array_equal(embedder.embed_many(iter(BILLING)), embedder.embed_many(BILLING))


# --- geometry -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [*DETERMINISM_TEXTS, "a", ".", "😀", "\ud800 lone surrogate"])
def test_unit_norm_float32(embedder: TextEmbedder, text: str) -> None:
    vec = embedder.embed(text)
    assert vec.shape == (256,)
    assert vec.dtype == np.float32
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-6)


def test_similar_texts_are_closer_than_unrelated(embedder: TextEmbedder) -> None:
    a = embedder.embed("The refund was issued to your credit card this morning.")
    b = embedder.embed("Your refund was issued to the credit card today.")
    c = embedder.embed("The parcel is waiting for you at the pickup point.")
    assert a @ b > a @ c + 0.2


def test_inflections_share_character_ngrams(embedder: TextEmbedder) -> None:
    refunded = embedder.embed("refunded")
    assert refunded @ embedder.embed("refunds") > 0.3
    assert refunded @ embedder.embed("refunds") > refunded @ embedder.embed("shipped") + 0.3


def test_numbers_fold_to_their_shape(embedder: TextEmbedder) -> None:
    assert np.array_equal(
        embedder.embed("order 12345 on 2024-05-01"), embedder.embed("order 67890 on 1999-12-31")
    )


def test_topics_separate(embedder: TextEmbedder) -> None:
    groups = {"billing": topic_texts("billing", 24, 1), "shipping": topic_texts("shipping", 24, 2)}
    assert_groups_separate(embedder, groups, margin=0.1, hits=0.9)


def test_json_and_prose_separate(embedder: TextEmbedder) -> None:
    as_json = [
        json.dumps(
            {"intent": "billing", "confidence": 0.9, "order_id": f"A-{i}", "reply": text[:40]}
        )
        for i, text in enumerate(BILLING)
    ]
    assert_groups_separate(embedder, {"json": as_json, "prose": BILLING}, margin=0.05, hits=0.9)


def test_languages_separate(embedder: TextEmbedder) -> None:
    groups = {"en": ENGLISH, "de": GERMAN, "zh": CHINESE}
    assert_groups_separate(embedder, groups, margin=0.03, hits=0.7)


@pytest.mark.parametrize(
    "text", ["退款已处理", "返金は処理されました", "환불이 처리되었습니다", "中"]
)
def test_cjk_text_gives_a_real_vector(embedder: TextEmbedder, text: str) -> None:
    vec = embedder.embed(text)
    assert np.count_nonzero(vec) > 0
    assert not np.array_equal(vec, embedder.empty)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("text", ["", " ", "\n\n", "\t \u3000", "\x00\x07"])
def test_blank_text_is_the_fixed_empty_vector(embedder: TextEmbedder, text: str) -> None:
    vec = embedder.embed(text)
    assert np.array_equal(vec, embedder.empty)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-6)
    assert embedder.empty.flags.writeable is False


def test_long_text_uses_head_and_tail(embedder: TextEmbedder) -> None:
    head, tail = "alpha beta gamma " * 200, " omega psi chi" * 100
    base = embedder.embed(head + "middle " * 2000 + tail)
    assert np.array_equal(base, embedder.embed(head + "other " * 2000 + tail))
    assert not np.array_equal(base, embedder.embed(head + "middle " * 2000 + " zeta" * 200))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=3000))
def test_any_text_gives_a_finite_unit_vector(text: str) -> None:
    vec = TextEmbedder(dimension=64).embed(text)
    assert vec.shape == (64,)
    assert np.isfinite(vec).all()
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)


# --- user-supplied vectors ----------------------------------------------------------------


def test_vector_from_record_normalises() -> None:
    vec = vector_from_record([3, 4.0])
    assert vec is not None
    assert vec.dtype == np.float32
    assert vec.tolist() == pytest.approx([0.6, 0.8])
    assert vector_from_record(None) is None
    assert vector_from_record((1e308, 1e308), dimension=2) == pytest.approx([0.7071068] * 2)
    assert vector_from_record(np.array([0.0, -2.0], dtype=np.float32)).tolist() == [0.0, -1.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "has 0 numbers"),
        ([1.0, float("nan")], "NaN"),
        ([1.0, float("inf")], "NaN or infinity"),
        (["0.5", 1.0], "only numbers"),
        ([True, 0.5], "only numbers"),
        ([None, 1.0], "only numbers"),
        ([[1.0, 2.0]], "only numbers"),
        (np.zeros((2, 2)), "only numbers"),
        ("0.1,0.2", "list of numbers"),
        ({"x": 1.0}, "list of numbers"),
        (0.5, "list of numbers"),
        ([0, 0.0], "all zeros"),
        ([10**400], "finite numbers"),
        ([1.0, 2.0, 3.0], "expected 2"),
    ],
)
def test_vector_from_record_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vector_from_record(value, dimension=2 if message == "expected 2" else None)


# --- evidence -----------------------------------------------------------------------------


def test_top_features_finds_an_injected_word() -> None:
    before = BILLING * 5
    after = [f"Voucher {text}" if i % 2 else text for i, text in enumerate(before)]
    shifts = top_features(before, after, k=5)
    assert shifts[0] == FeatureShift("voucher", 0.0, 0.5)
    assert shifts[0].change == 0.5
    assert len(shifts) == 1  # nothing else moved
    assert top_features(before, after, k=0) == []
    assert top_features([], after) == []


def test_top_features_reports_both_directions() -> None:
    before = (BILLING + SHIPPING) * 3
    after = [text.replace("invoice", "bill") for text in before]
    changes = {shift.feature: shift.change for shift in top_features(before, after, k=3)}
    assert changes["invoice"] < 0 < changes["bill"]


def test_top_features_is_bounded_and_sees_cjk_and_punctuation() -> None:
    shifts = top_features(["退款已处理。"] * 10, ['{"a": 0}'] * 10, k=50, max_texts=5)
    features = {shift.feature for shift in shifts}
    assert {"退款", '{"', '":', "}"} <= features
    assert all(len(shift.feature) <= 64 for shift in top_features(["x" * 500], ["y"], k=5))
