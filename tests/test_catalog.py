"""The catalogs of quantlab.core.memory are package data (quantlab/data/catalog.json):
the GPUs, the model shapes and the round model sizes are read from the file, and the
file's rows are checked against the records they become."""

from __future__ import annotations

import json
from dataclasses import fields
from importlib import resources

import pytest

from quantlab.core import memory as mem
from quantlab.core import memory_catalog as cat


def _file() -> dict:
    return json.loads(resources.files("quantlab").joinpath("data", "catalog.json").read_text("utf-8"))


def test_the_records_are_the_rows_of_the_file():
    data = _file()
    gpu_fields = [f.name for f in fields(mem.GPU)]
    assert [tuple(getattr(g, n) for n in gpu_fields) for g in mem.GPUS] == [
        tuple(row[n] for n in gpu_fields) for row in data["gpus"]["rows"]
    ]
    model_fields = [f.name for f in fields(mem.ModelShape)]
    assert [tuple(getattr(m, n) for n in model_fields) for m in mem.MODELS] == [
        tuple(row[n] for n in model_fields) for row in data["models"]["rows"]
    ]
    assert list(mem.MODEL_SIZES) == data["model_sizes"]["values"]
    assert isinstance(mem.GPUS, tuple) and isinstance(mem.MODELS, tuple) and isinstance(mem.MODEL_SIZES, tuple)


def test_the_catalog_is_consistent():
    names = [g.name for g in mem.GPUS]
    assert len(set(names)) == len(names)
    assert [g.memory_gib for g in mem.GPUS] == sorted(g.memory_gib for g in mem.GPUS)  # smallest first
    assert {g.kind for g in mem.GPUS} <= {"consumer", "laptop", "workstation", "datacenter", "edge"}
    assert all(g.memory_gib > 0 and g.bandwidth_gbs > 0 for g in mem.GPUS)
    for m in mem.MODELS:
        assert m.n_heads % m.n_kv_heads == 0 and m.hidden_size == m.n_heads * m.head_dim, m.name
    assert list(mem.MODEL_SIZES) == sorted(mem.MODEL_SIZES)
    # the lookups read the same records
    assert mem.get_gpu(mem.GPUS[-1].name) is mem.GPUS[-1] and mem.get_model(mem.MODELS[0].name) is mem.MODELS[0]


def test_a_row_that_does_not_fit_its_record_is_refused(monkeypatch):
    bad = {"gpus": {"rows": [{"name": "X", "memory_gib": 8, "kind": "edge", "colour": "red"}]}}
    monkeypatch.setattr(cat, "CATALOG", bad)
    with pytest.raises(ValueError, match=r"gpus\[0\] \('X'\): missing \['bandwidth_gbs'\], unknown \['colour'\]"):
        cat._records(mem.GPU, "gpus")
    bad["gpus"]["rows"][0] = {"name": "X", "memory_gib": 8, "bandwidth_gbs": 1, "kind": "edge", "note": "fine"}
    assert cat._records(mem.GPU, "gpus") == [mem.GPU("X", 8, 1, "edge")]
