"""Property-based: random sequences of grants, deductions, holds, captures (some replayed),
releases and expiries, run through the service functions; after every step the account
agrees with a simple model and with its own ledger."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from sqlalchemy import func, select

from shared.db import utcnow
from shared.errors import ServiceError
from services.credits.models import CreditAccount, CreditHold, CreditLedger

PRICES = {"text2img": 15, "upscale": 10}

steps = st.lists(st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 400)),
    st.tuples(st.just("deduct"), st.integers(1, 400)),
    st.tuples(st.just("hold"), st.sampled_from(sorted(PRICES)), st.integers(1, 16)),
    st.tuples(st.just("capture"), st.integers(0, 7), st.integers(0, 3), st.integers(1, 3)),
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(st.just("expire"), st.integers(0, 7)),
), min_size=1, max_size=20)


@dataclass
class Model:
    available: int = 500
    holds: dict[str, dict] = field(default_factory=dict)  # job → amount, captured, open, price
    captures: dict[str, int] = field(default_factory=dict)  # key → amount

    @property
    def held(self) -> int:
        return sum(h["amount"] - h["captured"] for h in self.holds.values() if h["open"])


def check_invariants(credits, user_id: int, model: Model) -> None:
    with credits.db.read() as session:
        account = session.get(CreditAccount, user_id)
        sums = session.execute(select(func.sum(CreditLedger.amount), func.sum(CreditLedger.held_change))
                               .where(CreditLedger.user_id == user_id)).one()
        open_held = session.scalar(select(func.sum(CreditHold.amount - CreditHold.captured - CreditHold.released))
                                   .where(CreditHold.user_id == user_id, CreditHold.status == "open"))
        chain = session.execute(select(CreditLedger.balance_before, CreditLedger.amount, CreditLedger.balance_after)
                                .where(CreditLedger.user_id == user_id).order_by(CreditLedger.id)).all()
        holds = session.scalars(select(CreditHold).where(CreditHold.user_id == user_id)).all()
    assert (account.available, account.held) == (model.available, model.held)
    assert account.available >= 0
    assert (int(sums[0]), int(sums[1])) == (account.available, account.held)
    assert int(open_held or 0) == account.held
    assert account.lifetime_earned - account.lifetime_spent == account.available + account.held
    previous = 0
    for before, amount, after in chain:
        assert (before, after) == (previous, before + amount)
        previous = after
    for hold in holds:
        assert 0 <= hold.captured <= hold.amount == hold.price_per_image * hold.images
        assert hold.released == 0 if hold.status == "open" else hold.remaining == 0


def apply(credits, adjustments, user_id: int, model: Model, jobs: list[str], step: tuple) -> None:
    kind = step[0]
    if kind == "grant":
        adjustments.grant(user_id, step[1], "property test", operator_id=1)
        model.available += step[1]
    elif kind == "deduct":
        try:
            adjustments.deduct(user_id, step[1], "property test", operator_id=1)
            model.available -= step[1]
        except ServiceError as exc:
            assert exc.code == "BALANCE_TOO_LOW" and step[1] > model.available
    elif kind == "hold":
        job, cost = f"prop-{uuid.uuid4().hex}", PRICES[step[1]] * step[2]
        try:
            result = credits.hold(user_id, job, step[1], step[2])
            assert result.amount == cost and cost <= model.available
            model.available -= cost
            model.holds[job] = {"amount": cost, "captured": 0, "open": True, "price": PRICES[step[1]]}
            jobs.append(job)
        except ServiceError as exc:
            assert exc.code == "INSUFFICIENT_CREDITS" and cost > model.available
    elif jobs:
        job = jobs[step[1] % len(jobs)]
        hold = model.holds[job]
        if kind == "capture":
            key, amount = f"capture:{job}:{step[2]}", hold["price"] * step[3]
            try:
                credits.capture(job, key, images=step[3])
                if key not in model.captures:
                    assert hold["open"] and hold["captured"] + amount <= hold["amount"]
                    hold["captured"] += amount
                    model.captures[key] = amount
                else:
                    assert model.captures[key] == amount
            except ServiceError as exc:
                expected = ("IDEMPOTENCY_CONFLICT" if key in model.captures else
                            "HOLD_SETTLED" if not hold["open"] else "HOLD_EXCEEDED")
                assert exc.code == expected
        else:
            rest = hold["amount"] - hold["captured"] if hold["open"] else 0
            if kind == "release":
                released = credits.release(job, f"release:{job}:{uuid.uuid4().hex[:6]}")["released"]
            else:
                released = credits.expire_hold(job, now=utcnow() + timedelta(days=1)) or 0
            assert released == rest
            model.available += rest
            hold["open"] = False


@hypothesis_settings(max_examples=60, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sequence=steps)
def test_random_movements_keep_every_invariant(credits, adjustments, sequence):
    user_id = uuid.uuid4().int % 10**12 + 1
    credits.open_account(user_id)
    model, jobs = Model(), []
    for step in sequence:
        apply(credits, adjustments, user_id, model, jobs, step)
        check_invariants(credits, user_id, model)
