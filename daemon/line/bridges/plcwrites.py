"""What a PLC or SCADA client may change on the line, for the Modbus and OPC UA bridges: announce
the next part and trigger it (`trigger`), and switch the line's recipe (`select_recipe`).

These are the only writes the PLC bridges make besides alert acknowledgements. A trigger is one
transaction on the line's slot: `SET rlr:nextpart:{line}` and `XADD rlr:triggers:{line}`
(`part_id`, `ts`, `via`, MAXLEN ~ 10000), read by producers that take the part id from the PLC.
A recipe switch goes through `daemon.recipes.store.RecipeStore.activate` (`by="plc"`), which
checks the recipe against the line's deployed model, records the switch or the refusal in
`rlr:recipe:log:{line}` and leaves the old recipe active when it refuses.

Both take a synchronous client (the recipe store's); the asyncio bridges call them through
`PlcActions`, in a thread.
"""

from __future__ import annotations

import asyncio

import redis

from daemon import logs
from daemon.line.part_ids import write_trigger
from daemon.recipes.recipe import RecipeError
from daemon.wire.ids import check

log = logs.get(__name__)


class Refused(Exception):
    """A recipe switch the store refused (unknown recipe or number, a model or class the line
    does not serve): the one-line reason; the old recipe stays active. `unknown`: no recipe
    has that number."""

    def __init__(self, reason: str, unknown: bool = False) -> None:
        super().__init__(reason)
        self.unknown = unknown


def trigger(client: redis.Redis, line: str, part_id: str | bytes, via: str,
            by: str | None = None) -> str:
    """Announce `part_id` as the line's next part and trigger it; the trigger's entry id.
    `daemon.wire.ids.BadId` (a ValueError naming why) when it is not a part id."""
    part = check("part", part_id)
    entry = write_trigger(client, line, part, via, by)
    log.info("part_triggered", line=line, part_id=part, via=via, entry=entry)
    return entry


def select_recipe(client: redis.Redis, line: str, via: str, *, name: str | None = None,
                  number: int | None = None, by: str = "plc") -> str:
    """Activate a recipe on `line`, by name or by its number; the activation's label
    (`name@revision`). `Refused` with the store's reason when it refuses."""
    # Imported on the first switch: a bridge that is never asked to switch does not need it.
    from daemon.recipes.store import RecipeStore, registry_for

    store = RecipeStore(client)
    if name is None:
        try:
            name = store.by_number(int(number or 0))
        except RecipeError as exc:
            log.warning("recipe_refused", line=line, number=number, via=via, why=str(exc))
            raise Refused(str(exc), unknown=True) from None
    try:
        # The model checks need the line's rollout; a line without one has no model to check.
        activation = store.activate(line, name, by=by, via=via,
                                    registry=registry_for(client, line))
    except RecipeError as exc:
        log.warning("recipe_refused", line=line, recipe=name, number=number, via=via,
                    why=str(exc))
        raise Refused(str(exc)) from None
    log.info("recipe_selected", line=line, recipe=activation.label, via=via)
    return activation.label


class PlcActions:
    """`trigger` and `select_recipe` for an asyncio bridge (`via`: its kind), each run in a
    thread on one synchronous client, so a slow Redis never stalls the protocol server."""

    def __init__(self, client: redis.Redis, via: str) -> None:
        self.client, self.via = client, via

    async def trigger(self, line: str, part_id: str | bytes, by: str | None = None) -> str:
        return await asyncio.to_thread(trigger, self.client, line, part_id, self.via, by)

    async def select_recipe(self, line: str, *, name: str | None = None,
                            number: int | None = None, by: str = "plc") -> str:
        return await asyncio.to_thread(select_recipe, self.client, line, self.via, name=name,
                                       number=number, by=by)

    def close(self) -> None:
        self.client.close()
