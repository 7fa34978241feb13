"""Production password hashing: argon2id with the library's recommended costs, verified off the event loop."""

from __future__ import annotations

from argon2 import PasswordHasher

from siyu.tenants import staff as staff_svc


async def test_production_hasher_is_argon2id_with_recommended_costs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.undo()  # drop the suite's quick hasher: this test is about the real one
    hasher = staff_svc._hasher
    default = PasswordHasher()
    assert (hasher.time_cost, hasher.memory_cost) == (default.time_cost, default.memory_cost)
    assert default.memory_cost >= 64 * 1024  # at least 64 MiB
    hashed = await staff_svc.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert f"m={default.memory_cost}" in hashed
    assert await staff_svc.verify_password(hashed, "correct horse battery")
    assert not await staff_svc.verify_password(hashed, "correct horse batterY")
    assert not await staff_svc.verify_password("not a hash", "anything")
