"""The tunable-kernel interface (compiler/tunable.py) as the cost model uses it: every kernel kind is
registered by the provider, specs round-trip through their JSON fields, and a mistyped field is an error."""
from __future__ import annotations

import json

import pytest

from tests.conftest import has_module

pytestmark = pytest.mark.skipif(not has_module("tvm"), reason="apache-tvm is not installed")


@pytest.fixture(scope="module")
def specs():
    from costmodel import measure as Me
    return [Me.conv_spec(64, 56, 64, 3, 1, 1), Me.conv_spec(96, 28, 96, 3, 2, 1, groups=96),
            Me.qconv_spec(64, 56, 64, 3, 1, 1), Me.matmul_spec((1, 6), 128, 128, 64, False, True),
            Me.qmatmul_spec(128, 384, 1152), Me.qbmm_spec(6, 128, 64, 128, True)]


def test_tunable_registers_every_feature_kind():
    from compiler import tunable
    from costmodel import features as F
    assert [tunable.kernel(k).kind for k in F.KINDS] == list(F.KINDS)
    with pytest.raises(KeyError, match="no tunable kernel of kind 'conv3d'"):
        tunable.kernel("conv3d")


def test_tunable_spec_round_trips_through_json(specs):
    from compiler import tunable
    from costmodel import features as F
    for spec in specs:
        assert tunable.kernel_of(spec).spec_type is type(spec)
        assert F.spec_from_json(json.loads(json.dumps(F.spec_to_json(spec)))) == spec


def test_tunable_default_tile_is_a_candidate_and_shapes_end_with_the_output(specs):
    from costmodel import features as F
    from costmodel import measure as Me
    for spec in specs:
        assert F.default_tile(spec) in F.candidate_tiles(spec)
        assert len(Me.arg_shapes(spec)) >= 3


def test_tunable_make_spec_rejects_an_unknown_field():
    from costmodel import features as F
    with pytest.raises(TypeError, match="Conv2dSpec has no field"):
        F.make_spec("conv", n=1, ci=16, h=8, w=8, co=16, kh=3, kw=3, stirde=(1, 1))
