"""tests/bounds_margins.py, the bounds audit: shares of a bound, non-finite draws, cut or corrupt log lines."""
import json
import math

import bounds_margins as bm


def test_shares_of_each_bound():
    row = dict(cosine=0.99995, rel_l1=0.01, min_cosine=0.9999, max_rel_l1=0.02)
    cos_share, rel_share = bm.shares(row)
    assert math.isclose(cos_share, 0.5, rel_tol=1e-6) and math.isclose(rel_share, 0.5)


def test_a_non_finite_draw_is_infinitely_far():
    assert bm.shares(dict(cosine=float("nan"), rel_l1=float("nan"), min_cosine=0.999, max_rel_l1=0.05)) == (
        math.inf, math.inf)


def test_cut_or_corrupt_lines_are_skipped(tmp_path, capsys):
    good = dict(test="t", cosine=0.9995, rel_l1=0.03, min_cosine=0.999, max_rel_l1=0.05)
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(good) + "\n" + '{"test": "t", "cosi' + "\n" + json.dumps({"test": "u"}) + "\n")
    assert bm.read_rows(str(path)) == [good]
    assert capsys.readouterr().out.count("skipped") == 2
