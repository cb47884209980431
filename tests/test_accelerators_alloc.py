"""Device allocation, pure: whole devices never shared, fractions spread only when they
must, holds restored from the log, and the plugin set's all-or-nothing requests (simulated
devices; no GPU, no services)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.agents.accelerators import (
    Accelerators,
    AllocationMode,
    NvmlAccelerator,
    SimAccelerator,
    SimAcceleratorConfig,
    UnsupportedResource,
    accelerator_option,
    make_accelerators,
)
from actors.domain.device_alloc import (
    DiscreteAllocMap,
    FractionAllocMap,
    InsufficientDevices,
    InvalidResourceArgument,
)

pytestmark = pytest.mark.unit
D = Decimal


def test_whole_devices_go_to_one_kernel_each_until_none_is_left() -> None:
    devices = DiscreteAllocMap("cuda.device", ["0", "1", "2"])
    assert devices.allocate("k1", D(2)) == {"0": D(1), "1": D(1)}
    assert devices.allocate("k2", D(1)) == {"2": D(1)}
    with pytest.raises(InsufficientDevices, match=r"1 requested, 0 free .*busy devices: 0, 1, 2"):
        devices.allocate("k3", D(1))
    devices.release("k1")
    assert devices.allocate("k3", D(2)) == {"0": D(1), "1": D(1)}


def test_a_fraction_of_a_whole_device_is_refused_by_the_discrete_map() -> None:
    devices = DiscreteAllocMap("cuda.device", ["0"])
    with pytest.raises(InvalidResourceArgument, match=r"whole devices: 0\.5"):
        devices.allocate("k1", D("0.5"))
    assert devices.holds == {}


def test_a_restarted_kernel_keeps_its_devices() -> None:
    devices = DiscreteAllocMap("cuda.device", ["0", "1"])
    first = devices.allocate("k1", D(1))
    assert devices.allocate("k1", D(1)) == first
    assert devices.free() == {"0": D(0), "1": D(1)}


def test_device_ids_are_ordered_as_numbers() -> None:
    devices = DiscreteAllocMap("cuda.device", [str(n) for n in range(12)])
    assert list(devices.allocate("k", D(3))) == ["0", "1", "2"]
    assert list(devices.capacity)[-2:] == ["10", "11"]


def test_shares_fit_the_tightest_device_and_spread_only_when_none_can_hold_them() -> None:
    shares = FractionAllocMap("cuda.shares", ["0", "1"])
    assert shares.allocate("a", D("0.6")) == {"0": D("0.6")}
    assert shares.allocate("b", D("0.3")) == {"0": D("0.3")}  # best fit: 0.4 left on 0
    assert shares.allocate("c", D("0.8")) == {"1": D("0.8")}
    assert shares.allocate("d", D("0.25")) == {"1": D("0.2"), "0": D("0.05")}  # freest first
    assert sum(shares.free().values()) == D("0.05")


def test_shares_are_counted_in_quanta() -> None:
    shares = FractionAllocMap("cuda.shares", ["0"], quantum=D("0.1"))
    with pytest.raises(InvalidResourceArgument, match=r"not a multiple of the quantum 0\.1"):
        shares.allocate("a", D("0.25"))


def test_a_restored_hold_on_a_device_that_is_gone_keeps_only_what_exists() -> None:
    devices = DiscreteAllocMap("cuda.device", ["0", "1"])
    devices.restore("k1", {"1": D(1), "7": D(1)})
    assert devices.holds == {"k1": {"1": D(1)}}
    assert devices.allocate("k2", D(1)) == {"0": D(1)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=40))
def test_what_the_scheduler_counted_as_free_always_fits(steps: list[tuple[bool, int]]) -> None:
    """Any sequence of requests and releases: a request no larger than the total free
    shares is always met, and no device is ever held beyond its capacity."""
    shares = FractionAllocMap("cuda.shares", ["0", "1", "2"], capacity=D(2), quantum=D("0.05"))
    owners: list[str] = []
    for n, (grow, size) in enumerate(steps):
        if grow or not owners:
            amount = D(size) * D("0.05")
            if amount <= sum(shares.free().values()):
                hold = shares.allocate(f"k{n}", amount)
                assert sum(hold.values()) == amount
                owners.append(f"k{n}")
        else:
            shares.release(owners.pop(0))
        assert all(D(0) <= free <= D(2) for free in shares.free().values())


def sim(**config: object) -> Accelerators:
    return Accelerators([SimAccelerator(SimAcceleratorConfig.model_validate(config))])


def test_the_sim_plugin_offers_its_devices_as_slots() -> None:
    assert sim(devices=4).slots() == {"cuda.device": D(4)}
    assert sim(devices=2, mode="fractional", shares_per_device=4).slots() == {"cuda.shares": D(8)}
    assert sim(devices=0).slots() == {}
    info = sim(devices=1, memory="8g").info()["cuda"]
    assert info["plugin"] == "sim" and info["slot"] == "cuda.device"
    assert info["devices"][0]["memory_bytes"] == 8 * 2**30


def test_a_kernel_learns_its_devices_the_mock_plugin_way() -> None:
    devices = sim(devices=3)
    devices.allocate("k1", {"cuda.device": D(1)})
    held = devices.allocate("k2", {"cpu": D(1), "mem": D(2**30), "cuda.device": D(2)})
    assert held.environ(on_host=True) == {
        "BACKENDAI_MOCK_CUDA_DEVICES": "1,2",
        "BACKENDAI_MOCK_CUDA_DEVICE_COUNT": "2",
    }
    assert held.docker() == {}
    assert held.attached() == {
        "cuda": [
            {
                "device_id": "1",
                "model_name": "Simulated CUDA Device",
                "data": {"cuda.device": "1", "mem": 16 * 2**30},
            },
            {
                "device_id": "2",
                "model_name": "Simulated CUDA Device",
                "data": {"cuda.device": "1", "mem": 16 * 2**30},
            },
        ]
    }


def test_a_request_for_an_accelerator_the_agent_lacks_is_refused_whole() -> None:
    devices = sim(devices=1)
    with pytest.raises(UnsupportedResource, match=r"rocm\.device is not offered by this agent"):
        devices.allocate("k1", {"cuda.device": D(1), "rocm.device": D(1)})
    assert devices.holders() == set()
    with pytest.raises(UnsupportedResource, match=r"cuda\.shares .*: cuda\.device"):
        devices.allocate("k1", {"cuda.shares": D("0.5")})


def test_a_hold_comes_back_from_the_recorded_attached_devices() -> None:
    before = sim(devices=2, mode="fractional")
    attached = before.allocate("k1", {"cuda.shares": D("1.5")}).attached()
    after = sim(devices=2, mode="fractional")
    after.restore("k1", attached)
    assert after.held("k1").device_ids() == {"cuda": ["0", "1"]}
    assert sum(after.maps["cuda"].free().values()) == D("0.5")


def test_device_utilization_feeds_the_checker_metric_names() -> None:
    devices = sim(devices=2, load="follow-cpu", memory_load=25)
    devices.allocate("k1", {"cuda.device": D(2)})
    sample = devices.sample({"k1": 80.0})
    assert sample["cuda"]["0"].utilization == 80.0
    assert devices.kernel_metrics("k1", sample) == {"cuda_util": 80.0, "cuda_mem": 25.0}
    assert devices.kernel_metrics("k-without-devices", sample) == {}


def test_nvml_absent_means_no_devices_and_says_why() -> None:
    plugin = NvmlAccelerator()
    if plugin.devices():
        pytest.skip("this machine has NVIDIA GPUs (see test_accelerators_nvml.py)")
    assert plugin.unavailable and plugin.unavailable.startswith("NVML is not available")
    devices = make_accelerators([{"plugin": "nvml"}])
    assert devices.slots() == {}
    assert devices.info()["cuda"]["unavailable"] == plugin.unavailable
    assert devices.info()["cuda"]["devices"] == []
    assert accelerator_option("auto") == []


def test_the_accelerator_option_forms() -> None:
    assert accelerator_option("none") == []
    assert accelerator_option("sim") == [{"plugin": "sim"}]
    assert accelerator_option("sim:4:shares") == [
        {"plugin": "sim", "devices": 4, "mode": "fractional"}
    ]
    assert accelerator_option("nvml") == [{"plugin": "nvml"}]
    for bad in ("gpu", "sim:x", "none:shares", "nvml:2"):
        with pytest.raises(ValueError, match="use one of auto, none"):
            accelerator_option(bad)


def test_a_bad_plugin_configuration_is_refused_with_its_field() -> None:
    with pytest.raises(ValueError, match="devices"):
        make_accelerators([{"plugin": "sim", "devices": -1}])
    with pytest.raises(ValueError, match="plugin"):
        make_accelerators([{"plugin": "tpu"}])
    assert SimAccelerator().mode is AllocationMode.DISCRETE
