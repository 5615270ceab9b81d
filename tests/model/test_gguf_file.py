"""GGUFFile reads what gguf's own reader reads: every metadata value and every tensor."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, quantize
from lmforge.errors import ModelLoadError
from lmforge.model.gguf_file import GGUFFile


@pytest.fixture
def written(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.block_count", 2)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_string("tokenizer.chat_template", "{{ messages }} ünï")
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "ü", "▁the"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.0, -3.25])
    writer.add_array("tokenizer.ggml.token_type", [3, 1, 1, 1])
    weights = {
        "f32": (rng.standard_normal((3, 8)).astype(np.float32), GGMLQuantizationType.F32),
        "f16": (rng.standard_normal((4, 16)).astype(np.float32), GGMLQuantizationType.F16),
        "q8_0": (rng.standard_normal((2, 64)).astype(np.float32), GGMLQuantizationType.Q8_0),
        "q4_1": (rng.standard_normal((5, 32)).astype(np.float32), GGMLQuantizationType.Q4_1),
    }
    for name, (array, qtype) in weights.items():
        stored = quantize(array, qtype)
        writer.add_tensor(name, stored, raw_shape=stored.shape if qtype in (
            GGMLQuantizationType.F32, GGMLQuantizationType.F16) else None, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_metadata_matches_gguf_reader(written):
    ours, theirs = GGUFFile(written), GGUFReader(str(written))
    fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}  # header
    assert set(ours.metadata) == set(fields)
    for key, field in fields.items():
        expected = field.contents()
        if isinstance(expected, float):
            assert ours.get(key) == pytest.approx(expected)
        elif isinstance(expected, list) and expected and isinstance(expected[0], float):
            assert ours.get(key) == pytest.approx(expected)
        else:
            assert ours.get(key) == expected, key
    assert ours.get("tokenizer.ggml.tokens") == ["<s>", "a", "ü", "▁the"]


def test_tensors_match_gguf_reader(written):
    from gguf import dequantize

    ours, theirs = GGUFFile(written), GGUFReader(str(written))
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, reference in zip(ours.tensors, theirs.tensors, strict=True):
        expected = dequantize(reference.data, reference.tensor_type).astype(np.float32)
        expected = expected.reshape(tuple(reversed([int(n) for n in reference.shape])))
        got = ours.dequantize(mine)
        assert got.shape == mine.shape == expected.shape
        assert got.dtype == np.float32 and got.flags.writeable
        np.testing.assert_array_equal(got, expected)
    # Dequantized arrays are copies: the file can be unmapped while they live on, and a later
    # read maps it again.
    first = ours.dequantize(ours.tensors[0])
    ours.release()
    assert ours._map is None
    np.testing.assert_array_equal(ours.dequantize(ours.tensors[0]), first)


def test_not_a_gguf_file_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all, just some bytes to read")
    with pytest.raises(ModelLoadError, match="Cannot read the GGUF file .*magic"):
        GGUFFile(bad)


def test_demo_model_reads_fast(smollm2_gguf):
    import time

    start = time.perf_counter()
    gguf = GGUFFile(smollm2_gguf)
    elapsed = time.perf_counter() - start
    assert len(gguf.get("tokenizer.ggml.tokens")) == 49152
    assert gguf.get("general.architecture") == "llama"
    # gguf's reader takes about 3 s here; a generous bound keeps busy CI machines green.
    assert elapsed < 1.5
