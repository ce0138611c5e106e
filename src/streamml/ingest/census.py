"""A seeded, vectorised census-income simulator with the layout of the public Adult (census income) data.

The public data cannot be fetched here, so this module draws records with its 14 columns, spelled as its
loaders name them, and the label ``income`` (``<=50K`` / ``>50K``, about 24% positive):

    age, workclass, fnlwgt, education, education_num, marital_status, occupation, relationship, race, sex,
    capital_gain, capital_loss, hours_per_week, native_country, income

Categories and their shares follow the public data (``?`` marks an unknown work class or occupation, as
there). Columns depend on each other the way they do there: young people are mostly never married and live
with their parents, occupation follows education, an unknown work class has an unknown occupation, and
capital gains are more common with age and education. The label is a Bernoulli draw from a logistic score of
education, age (rising, then falling), hours worked, marriage, occupation, work class, sex and capital
gains/losses, so a model can learn it (about 0.84 accuracy against a 0.76 majority baseline) but not exactly.

Everything is drawn over whole NumPy arrays; :func:`census_chunks` yields seeded tables of a bounded size.

    >>> t = census(2000, seed=1)
    >>> t.num_rows, t.column_names[-1], round(t.column("income").to_pylist().count(">50K") / 2000, 1)
    (2000, 'income', 0.2)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

LABEL = "income"
POSITIVE, NEGATIVE = ">50K", "<=50K"
#: rows of the public data (train + test); the CLI's default count
ADULT_ROWS = 48_842

#: (education, education_num, share)
EDUCATION = [
    ("Preschool", 1, 0.002), ("1st-4th", 2, 0.005), ("5th-6th", 3, 0.010), ("7th-8th", 4, 0.020),
    ("9th", 5, 0.016), ("10th", 6, 0.029), ("11th", 7, 0.036), ("12th", 8, 0.013), ("HS-grad", 9, 0.322),
    ("Some-college", 10, 0.223), ("Assoc-voc", 11, 0.042), ("Assoc-acdm", 12, 0.033), ("Bachelors", 13, 0.164),
    ("Masters", 14, 0.053), ("Prof-school", 15, 0.018), ("Doctorate", 16, 0.013),
]  # fmt: skip
#: (work class, share, effect on the income score)
WORKCLASS = [
    ("Private", 0.694, 0.0), ("Self-emp-not-inc", 0.079, -0.2), ("Local-gov", 0.064, 0.1), ("?", 0.057, -0.6),
    ("State-gov", 0.041, -0.1), ("Self-emp-inc", 0.035, 0.7), ("Federal-gov", 0.029, 0.5),
    ("Without-pay", 0.0005, -2.0), ("Never-worked", 0.0005, -2.0),
]  # fmt: skip
#: (occupation, share, change of its log-odds per year of education above 10, effect on the income score)
OCCUPATION = [
    ("Prof-specialty", 0.134, 0.55, 0.7), ("Craft-repair", 0.133, -0.15, 0.1), ("Exec-managerial", 0.132, 0.35, 0.9),
    ("Adm-clerical", 0.122, 0.0, -0.2), ("Sales", 0.119, 0.1, 0.3), ("Other-service", 0.107, -0.25, -1.1),
    ("Machine-op-inspct", 0.066, -0.3, -0.3), ("Transport-moving", 0.051, -0.25, -0.1),
    ("Handlers-cleaners", 0.045, -0.3, -0.8), ("Farming-fishing", 0.032, -0.25, -0.7),
    ("Tech-support", 0.031, 0.2, 0.5), ("Protective-serv", 0.021, 0.0, 0.4), ("Priv-house-serv", 0.005, -0.3, -1.8),
    ("Armed-Forces", 0.0004, 0.0, 0.0),
]  # fmt: skip
#: (marital status, share, change of its log-odds per year of age above 35, effect on the income score)
MARITAL = [
    ("Married-civ-spouse", 0.458, 0.03, 2.0), ("Never-married", 0.330, -0.11, -0.4), ("Divorced", 0.136, 0.03, 0.0),
    ("Separated", 0.031, 0.0, -0.2), ("Widowed", 0.031, 0.09, -0.1), ("Married-spouse-absent", 0.013, 0.0, 0.0),
    ("Married-AF-spouse", 0.001, 0.0, 1.8),
]  # fmt: skip
RACE = [("White", 0.855), ("Black", 0.096), ("Asian-Pac-Islander", 0.031), ("Amer-Indian-Eskimo", 0.010),
        ("Other", 0.008)]  # fmt: skip
COUNTRY = [
    ("United-States", 0.897), ("Mexico", 0.019), ("?", 0.018), ("Philippines", 0.006), ("Germany", 0.004),
    ("Puerto-Rico", 0.004), ("Canada", 0.004), ("El-Salvador", 0.003), ("India", 0.003), ("Cuba", 0.003),
    ("England", 0.003), ("China", 0.003), ("South", 0.002), ("Jamaica", 0.002), ("Italy", 0.002),
    ("Dominican-Republic", 0.002), ("Japan", 0.002), ("Guatemala", 0.002), ("Poland", 0.002), ("Vietnam", 0.002),
    ("Columbia", 0.002), ("Haiti", 0.002), ("Portugal", 0.001), ("Taiwan", 0.001), ("Iran", 0.001),
    ("Greece", 0.001), ("Nicaragua", 0.001), ("Peru", 0.001), ("Ecuador", 0.001), ("France", 0.001),
    ("Ireland", 0.001),
]  # fmt: skip
RELATIONSHIPS = ("Husband", "Wife", "Own-child", "Not-in-family", "Unmarried", "Other-relative")
SEXES = ("Male", "Female")

#: the columns in the public data's order; every one but the label is a feature
CENSUS_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation", "relationship",
    "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", LABEL,
]  # fmt: skip
NUMERIC_COLUMNS = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]

_INTERCEPT = -7.95  # sets the positive share to about 24%


def census_schema() -> pa.Schema:
    """Arrow schema of :func:`census`: integers for the numeric columns, strings for the others."""
    return pa.schema([(c, pa.int64() if c in NUMERIC_COLUMNS else pa.string()) for c in CENSUS_COLUMNS])


def _shares(table: Sequence[tuple[object, ...]], at: int) -> np.ndarray:
    shares = np.asarray([row[at] for row in table], dtype=np.float64)
    return shares / shares.sum()


def _draw(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """One category index per row of ``logits`` ``[rows, categories]`` (the Gumbel-max trick)."""
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)


def _strings(names: Sequence[str], codes: np.ndarray) -> pa.Array:
    return pa.array(list(names), pa.string()).take(pa.array(codes))


def census(n: int, *, seed: int = 42) -> pa.Table:
    """``n`` census-like records as an Arrow table of :func:`census_schema` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    age = np.clip(np.round(17 + rng.gamma(3.0, 7.2, n)), 17, 90).astype(np.int64)
    sex = (rng.random(n) < 0.33).astype(np.int64)  # 1: Female
    race = rng.choice(len(RACE), n, p=_shares(RACE, 1))
    country = rng.choice(len(COUNTRY), n, p=_shares(COUNTRY, 1))
    # education: fewer degrees among the youngest (still studying)
    edu_logits = np.log(_shares(EDUCATION, 2))[None, :].repeat(n, axis=0)
    young = age < 23
    edu_logits[young, 12:] -= 2.0
    education = _draw(rng, edu_logits)
    education_num = np.asarray([e[1] for e in EDUCATION], dtype=np.int64)[education]
    # marital status and relationship follow age and sex
    marital_logits = np.log(_shares(MARITAL, 1))[None, :] + np.outer(age - 35, [m[2] for m in MARITAL])
    marital = _draw(rng, marital_logits)
    married = np.isin(marital, [0, 6])
    single_rel = np.select(
        [age < 27, rng.random(n) < 0.35 + 0.2 * sex], [2, 4], default=3
    )  # own child, unmarried, not in family
    single_rel = np.where(rng.random(n) < 0.06, 5, single_rel)
    relationship = np.where(married, np.where(sex == 1, 1, 0), single_rel)
    # work class, and occupation after education (unknown when the work class is)
    workclass = rng.choice(len(WORKCLASS), n, p=_shares(WORKCLASS, 1))
    occ_logits = np.log(_shares(OCCUPATION, 1))[None, :] + np.outer(education_num - 10, [o[2] for o in OCCUPATION])
    occ_logits[sex == 1, 1] -= 2.0  # craft and repair, transport: mostly men
    occ_logits[sex == 1, 7] -= 1.5
    occ_logits[sex == 1, 3] += 0.9  # administration: mostly women
    occupation = _draw(rng, occ_logits)
    unknown_occupation = (workclass == 3) | (workclass == 8)
    occupation_names = [o[0] for o in OCCUPATION] + ["?"]
    occupation = np.where(unknown_occupation, len(OCCUPATION), occupation)
    # hours: a spike at 40, fewer for the young and for women
    hours = np.where(rng.random(n) < 0.47, 40.0, rng.normal(41.0, 12.0, n))
    hours = hours - np.where(young, rng.uniform(0, 15, n), 0.0) - np.where(sex == 1, rng.uniform(0, 6, n), 0.0)
    hours_per_week = np.clip(np.round(hours), 1, 99).astype(np.int64)
    # capital gains and losses: rare, likelier with age and education
    gain_p = 1 / (1 + np.exp(-(-2.8 + 0.25 * (education_num - 10) + 0.03 * (age - 35))))
    has_gain = rng.random(n) < gain_p
    gain = np.where(has_gain, np.exp(rng.normal(8.3, 1.0, n)), 0.0)
    gain = np.where(has_gain & (rng.random(n) < 0.06), 99999.0, np.minimum(gain, 99998.0))
    has_loss = ~has_gain & (rng.random(n) < 0.048)
    capital_loss = np.where(has_loss, np.clip(rng.normal(1870, 360, n), 150, 4400), 0.0).round().astype(np.int64)
    capital_gain = gain.round().astype(np.int64)
    fnlwgt = np.clip(np.exp(rng.normal(12.0, 0.48, n)), 12_000, 1_500_000).round().astype(np.int64)
    # the label: a logistic score of the features
    years = age - 17.0
    score = _INTERCEPT + (
        0.36 * education_num
        + 0.105 * years
        - 0.0016 * years**2
        + 0.032 * (hours_per_week - 40)
        + np.asarray([m[3] for m in MARITAL])[marital]
        + np.asarray([o[3] for o in OCCUPATION] + [-0.6])[occupation]
        + np.asarray([w[2] for w in WORKCLASS])[workclass]
        + 0.3 * (sex == 0)
        + np.where(capital_gain >= 5000, 3.5, np.where(capital_gain > 0, 0.4, 0.0))
        + np.where((capital_loss >= 1800) & (capital_loss <= 2600), 1.2, 0.0)
    )
    positive = rng.random(n) < 1 / (1 + np.exp(-score))
    columns = {
        "age": pa.array(age),
        "workclass": _strings([w[0] for w in WORKCLASS], workclass),
        "fnlwgt": pa.array(fnlwgt),
        "education": _strings([e[0] for e in EDUCATION], education),
        "education_num": pa.array(education_num),
        "marital_status": _strings([m[0] for m in MARITAL], marital),
        "occupation": _strings(occupation_names, occupation),
        "relationship": _strings(RELATIONSHIPS, relationship),
        "race": _strings([r[0] for r in RACE], race),
        "sex": _strings(SEXES, sex),
        "capital_gain": pa.array(capital_gain),
        "capital_loss": pa.array(capital_loss),
        "hours_per_week": pa.array(hours_per_week),
        "native_country": _strings([c[0] for c in COUNTRY], country),
        LABEL: _strings([NEGATIVE, POSITIVE], positive.astype(np.int64)),
    }
    return pa.table(columns, schema=census_schema())


def census_chunks(count: int | None, *, seed: int = 42, chunk: int = 10_000) -> Iterator[pa.Table]:
    """Successive tables of census records (``count`` None: without end); chunk ``i`` is seeded ``seed + i``."""
    produced = 0
    for index in itertools.count():
        if count is not None and produced >= count:
            return
        n = chunk if count is None else min(chunk, count - produced)
        yield census(n, seed=seed + index)
        produced += n
