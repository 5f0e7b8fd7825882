"""RunSlots: at most N runs in their first seconds at once; a slot is given back once."""

from __future__ import annotations

import asyncio

from celery_probe.run import runner
from celery_probe.run.runner import RunSlots


def test_a_run_beyond_the_slots_waits_until_one_ends():
    async def main() -> list[str]:
        slots, order = RunSlots(2), []

        async def run(name: str, seconds: float) -> None:
            async with slots.hold():
                order.append(f"{name} starts")
                await asyncio.sleep(seconds)

        await asyncio.gather(run("a", 0.2), run("b", 0.2), run("c", 0.0))
        return order

    assert asyncio.run(main()) == ["a starts", "b starts", "c starts"]


def test_a_long_run_gives_its_slot_back_after_the_hold(monkeypatch):
    monkeypatch.setattr(runner, "SLOT_HOLD", 0.1)

    async def main() -> float:
        slots = RunSlots(1)
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def hung() -> None:
            async with slots.hold():
                await asyncio.sleep(2)

        task = asyncio.create_task(hung())
        await asyncio.sleep(0)
        async with slots.hold():
            waited = loop.time() - started
        task.cancel()
        return waited

    assert 0.08 <= asyncio.run(main()) < 1.0


def test_a_slot_is_given_back_once_even_after_the_hold_expired(monkeypatch):
    monkeypatch.setattr(runner, "SLOT_HOLD", 0.01)

    async def main() -> list[str]:
        slots, order = RunSlots(1), []
        async with slots.hold():
            await asyncio.sleep(0.05)  # the hold expired inside: released then, not again at the end
        monkeypatch.setattr(runner, "SLOT_HOLD", 5.0)

        async def run(name: str) -> None:
            async with slots.hold():
                order.append(f"{name} starts")
                await asyncio.sleep(0.1)
                order.append(f"{name} ends")

        await asyncio.gather(run("a"), run("b"))  # one slot: b waits for a (two would start both)
        return order

    assert asyncio.run(main()) == ["a starts", "a ends", "b starts", "b ends"]


def test_the_default_size_is_two_per_usable_cpu():
    from celery_probe.run.cpus import usable_cpus

    assert RunSlots().size == runner.RUNS_PER_CPU * usable_cpus()
    assert RunSlots(3).size == 3
