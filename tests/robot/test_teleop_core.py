"""Teleop core with a stand-in HID device at the lowest level: report parsing, axis mapping, deadband, scaling,
gripper buttons, keyboard fallback, intervention (HIL-SERL) detection, unplugging."""

from __future__ import annotations

import numpy as np
import pytest
from hid_standin import StandInHidDevice, button_report, rotation_report, translation_report

from irevla.robot.config import SpaceMouseConfig, TeleopConfig
from irevla.robot.teleop import (
    InterventionDetector,
    KeyboardSource,
    SpaceMouseReportParser,
    SpaceMouseSource,
    TeleopCore,
)

IDENTITY_MAPPING = SpaceMouseConfig(axis_order=(0, 1, 2, 3, 4, 5), axis_signs=(1.0,) * 6, deadband=0.1)


def test_parser_reads_both_report_layouts_and_buttons():
    parser = SpaceMouseReportParser()
    assert parser.feed(translation_report(100, -200, 350))
    assert parser.feed(rotation_report(-5, 6, -7))
    assert np.array_equal(parser.reading.axes, [100, -200, 350, -5, 6, -7])
    assert parser.feed(translation_report(1, 2, 3, rotation=(4, 5, 6)))  # wireless: one 13-byte report
    assert np.array_equal(parser.reading.axes, [1, 2, 3, 4, 5, 6])
    assert parser.feed(button_report(0b10)) and parser.reading.buttons == 2
    assert not parser.feed([0x17, 0, 0]) and not parser.feed([])


@pytest.fixture
def spacemouse():
    device = StandInHidDevice()
    source = SpaceMouseSource(device, IDENTITY_MAPPING, poll_timeout_ms=5)
    yield device, source
    source.close()


def test_full_deflection_gives_the_configured_step(spacemouse):
    device, source = spacemouse
    core = TeleopCore(TeleopConfig(), source.read)
    device.push(translation_report(350, 0, -350), rotation_report(0, 0, 700))  # beyond full scale: clipped
    device.drain()
    step = core.step()
    assert np.allclose(step.action, [0.02, 0.0, -0.02, 0.0, 0.0, 0.1, 0.0], atol=1e-6)
    assert step.action.dtype == np.float32 and step.intervening


def test_deadband_zeroes_small_deflections_and_rescales_the_rest(spacemouse):
    device, source = spacemouse
    device.push(translation_report(20, 0, 0))  # 0.057 < deadband 0.1
    device.drain()
    assert np.allclose(source.read().axes, 0.0)
    device.push(translation_report(int(0.55 * 350), 0, 0))  # halfway between the deadband and full scale
    device.drain()
    assert source.read().axes[0] == pytest.approx(0.5, abs=0.01)


def test_axis_mapping_and_signs_from_config():
    device = StandInHidDevice()
    config = SpaceMouseConfig(axis_order=(1, 0, 2, 4, 3, 5), axis_signs=(1.0, -1.0, -1.0, 1.0, -1.0, -1.0),
                              deadband=0.0)
    source = SpaceMouseSource(device, config, poll_timeout_ms=5)
    try:
        device.push(translation_report(350, 175, 350, rotation=(0, 350, 0)))
        device.drain()
        assert np.allclose(source.read().axes, [0.5, -1.0, -1.0, 1.0, 0.0, 0.0])
    finally:
        source.close()


def test_buttons_close_and_open_the_gripper(spacemouse):
    device, source = spacemouse
    core = TeleopCore(TeleopConfig(), source.read)
    device.push(button_report(0b01))
    device.drain()
    assert core.step().action[6] == 1.0
    device.push(button_report(0))
    device.drain()
    assert core.step().action[6] == 1.0  # latched
    device.push(button_report(0b10))
    device.drain()
    assert core.step().action[6] == 0.0


def test_unplugged_device_stops_the_reader_with_a_reason(spacemouse):
    device, source = spacemouse
    device.unplug()
    source._thread.join(timeout=2.0)
    assert not source._thread.is_alive() and "disconnected" in source.error


def test_keyboard_source_one_press_is_one_step():
    keys = KeyboardSource()
    core = TeleopCore(TeleopConfig(), keys.read)
    for key in "wwa ":
        keys.on_key(key)
    step = core.step()
    assert np.allclose(step.action, [0.02, 0.02, 0, 0, 0, 0, 1.0])  # repeated w saturates at full deflection
    assert np.allclose(core.step().action, [0, 0, 0, 0, 0, 0, 1.0])  # consumed; gripper stays closed
    assert not keys.on_key("q")


def test_intervention_is_held_for_half_a_second_after_the_last_input():
    now = [0.0]
    detector = InterventionDetector(threshold=1e-3, hold_s=0.5)
    assert not detector.update(np.zeros(6), now[0])
    assert detector.update(np.array([0.002, 0, 0, 0, 0, 0]), now[0])
    now[0] = 0.4
    assert detector.update(np.zeros(6), now[0])
    now[0] = 0.51
    assert not detector.update(np.zeros(6), now[0])
    assert detector.update(np.zeros(6), now[0], buttons=True)


def test_teleop_core_never_outputs_nan():
    core = TeleopCore(TeleopConfig(), lambda: __import__("irevla.robot.teleop", fromlist=["TeleopInput"])
                      .TeleopInput(axes=np.array([np.nan, np.inf, -np.inf, 0.5, 2.0, -3.0])))
    action = core.step().action
    assert np.all(np.isfinite(action)) and np.all(np.abs(action[:3]) <= 0.02) and np.all(np.abs(action[3:6]) <= 0.1)
