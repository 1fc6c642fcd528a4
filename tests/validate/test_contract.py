import pytest

from omniforge.errors import ContractError
from omniforge.sources.token2wav import Token2WavMetadata
from omniforge.validate.contract import (
    Link,
    check_codec_contract,
    check_declared_axes,
    check_interface,
    check_link,
)

CONTROL_IDS = {"pad": 8292, "bos": 8293, "eos": 8294, "mask": 8296}


def _signature(inputs: dict, outputs: dict) -> dict:
    def values(spec: dict) -> list:
        return [{"name": n, "dtype": "float32", "shape": s} for n, s in spec.items()]

    return {"inputs": values(inputs), "outputs": values(outputs)}


PROJECTION = _signature({"audio_features": ["b", "f", 1280]}, {"audio_embeds": ["b", "f2", 3584]})
TALKER_3B = _signature({"inputs_embeds": ["b", "s", 2048]}, {"logits": ["b", "s", 8448]})
TALKER_7B = _signature({"inputs_embeds": ["b", "s", 3584]}, {"logits": ["b", "s", 8448]})
LINK = Link("projection", "audio_embeds", "talker", "inputs_embeds")


def test_link_holds_when_dims_match() -> None:
    facts = check_link(LINK, PROJECTION, TALKER_7B)
    assert facts == {"projection.audio_embeds[-1]": 3584, "talker.inputs_embeds[-1]": 3584}


def test_broken_link_names_both_dims() -> None:
    with pytest.raises(ContractError) as err:
        check_link(LINK, PROJECTION, TALKER_3B)
    message = str(err.value)
    assert "projection output audio_embeds[-1] = 3584" in message
    assert "talker input inputs_embeds[-1] = 2048" in message


def test_link_to_a_missing_input_is_named() -> None:
    other = _signature({"hidden": ["b", 3584]}, {"logits": ["b", 8448]})
    with pytest.raises(ContractError, match="no input 'inputs_embeds'"):
        check_link(LINK, PROJECTION, other)


def test_declared_dynamic_axis_fixed_in_graph_fails() -> None:
    fixed = _signature({"inputs_embeds": [2, "s", 3584]}, {"logits": ["b", "s", 8448]})
    with pytest.raises(ContractError, match="axis 0 .batch_size. is declared dynamic"):
        check_declared_axes(fixed, {"inputs_embeds": {0: "batch_size"}}, {}, "talker-fp32")
    check_declared_axes(
        TALKER_7B, {"inputs_embeds": {0: "batch_size", 1: "seq"}}, {}, "talker-fp32"
    )


def test_interface_must_match_the_config() -> None:
    check_interface(TALKER_7B, {"inputs_embeds": 3584, "logits": 8448}, "talker")
    with pytest.raises(ContractError, match="logits\\[-1\\] is 8448 in the graph but 8192"):
        check_interface(TALKER_7B, {"logits": 8192}, "talker")


def test_codec_contract_holds_for_qwen_ids() -> None:
    facts = check_codec_contract(Token2WavMetadata(num_embeds=8193), 8448, CONTROL_IDS)
    assert facts["token2wav_num_embeds"] == 8193


def test_token2wav_range_larger_than_vocab_fails_naming_both() -> None:
    with pytest.raises(ContractError, match=r"codes \[0, 9000\).*vocabulary of 8448"):
        check_codec_contract(Token2WavMetadata(num_embeds=9000), 8448, CONTROL_IDS)


def test_control_id_inside_code_range_fails() -> None:
    with pytest.raises(ContractError, match="pad=8292 lies inside Token2Wav's code range"):
        check_codec_contract(Token2WavMetadata(num_embeds=8300), 8448, CONTROL_IDS)


def test_control_id_outside_vocab_fails() -> None:
    with pytest.raises(ContractError, match="mask=8296 lies outside the talker vocabulary"):
        check_codec_contract(Token2WavMetadata(num_embeds=8193), 8295, CONTROL_IDS)
