"""Recipes and each line's active one, in Redis, with the history of every switch.

Keys (`daemon.wire.keys`):
- `rlr:recipe:rev:<name>` hash: revision -> JSON `{"revision", "ts", "by", "recipe"}`. A
  revision is written once (HSETNX) and never changed; a changed file is a new revision.
- `rlr:recipes` hash: name -> the same JSON of its latest revision (what `list` reads).
- `rlr:recipe:active:{line}` hash: `Activation.to_hash()`, with the recipe it replaced.
- `rlr:recipe:log:{line}` stream: every switch and every refused one (ts, by, via, name,
  revision, action, why), MAXLEN ~ 1000.
A switch is one WATCH/MULTI on the line's keys (active hash, log entry, PUBLISH of the line
on `RECIPE_CHANNEL`), so readers never see a switch without its record.
"""

from __future__ import annotations

import json
import time

import redis

from daemon.models.registry import Registry
from daemon.recipes.model_check import why_not
from daemon.recipes.recipe import Activation, Recipe, RecipeError, from_json
from daemon.settings import check_name
from daemon.wire import ids, keys
from daemon.wire.clients import is_cluster
from daemon.wire.text import text

LOG_MAXLEN = 1000


def _canon(recipe: Recipe) -> str:
    return json.dumps(recipe.to_json(), sort_keys=True)


def _line(line: str) -> str:
    try:
        return check_name(line)
    except ValueError as exc:
        raise RecipeError(f"line {exc}") from None


class RecipeStore:
    """Recipes, revisions and active recipes through a synchronous client (any replies)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    # ------------------------------------------------------------------ recipes

    def add(self, recipe: Recipe, by: str) -> int:
        """Store `recipe` as a new revision (1, 2, ...); the same content as the latest
        revision is not stored again and its revision is returned."""
        latest = self._latest(recipe.name)
        if latest is not None and _canon(latest[0]) == _canon(recipe):
            return latest[1]
        self._check_number(recipe)
        rev_key = keys.recipe_revisions(recipe.name)
        rev = max((int(text(k)) for k in self.r.hkeys(rev_key)), default=0) + 1
        while True:
            entry = json.dumps({"revision": rev, "ts": time.time(), "by": by,
                                "recipe": recipe.to_json()})
            if self.r.hsetnx(rev_key, str(rev), entry):
                break
            rev += 1  # another writer took this number meanwhile
        self._set_latest(recipe.name, rev, entry)
        return rev

    def get(self, name: str, revision: int | None = None) -> tuple[Recipe, int]:
        """A recipe (its latest revision, or `revision`); RecipeError when there is none."""
        if revision is None:
            found = self._latest(name)
            if found is None:
                raise RecipeError(f"unknown recipe {name!r}; `rlrctl recipe list` shows them, "
                                  "`rlrctl recipe add FILE` adds one")
            return found
        raw = self.r.hget(keys.recipe_revisions(name), str(revision))
        if raw is None:
            self.get(name)
            raise RecipeError(f"recipe {name} has no revision {revision}; `rlrctl recipe show "
                              f"{name}` names the latest")
        return from_json(json.dumps(json.loads(raw)["recipe"])), revision

    def revisions(self, name: str) -> list[dict]:
        """Every revision of `name`, oldest first: revision, ts, by, recipe (JSON)."""
        out = [json.loads(raw) for raw in self.r.hgetall(keys.recipe_revisions(name)).values()]
        return sorted(out, key=lambda e: e["revision"])

    def list(self) -> list[dict]:
        """Every recipe's latest revision, by name: name, revision, number, product, class,
        model, views, ts, by."""
        rows = []
        for name, raw in self.r.hgetall(keys.RECIPES).items():
            e = json.loads(raw)
            r = e["recipe"]
            rows.append({"name": text(name), "revision": e["revision"], "number": r.get("number"),
                         "product": r["product"], "class": r["class"],
                         "model": r.get("model", "production"),
                         "views": [v["name"] for v in r["views"]], "ts": e["ts"], "by": e["by"]})
        return sorted(rows, key=lambda row: row["name"])

    def by_number(self, number: int) -> str:
        """The name of the recipe the PLC selects as `number`; RecipeError when none."""
        for row in self.list():
            if row["number"] == number:
                return row["name"]
        raise RecipeError(f"no recipe has number {number}; give one a `number = {number}` and "
                          "`rlrctl recipe add` it")

    # ------------------------------------------------------------------ lines

    def active(self, line: str) -> Activation | None:
        return Activation.from_hash(line, self.r.hgetall(keys.recipe_active(line)))

    def activate(self, line: str, name: str, *, by: str, via: str,
                 registry: Registry | None = None) -> Activation:
        """Make `name` (its latest revision) the line's recipe from now on. Refused, with one
        line in a RecipeError and in the line's log, when the recipe is unknown or the line's
        deployed model cannot serve it (with `registry`; None: the line serves a model file,
        only the recipe's existence is checked). The old recipe then stays active. The recipe
        already active (same revision) is returned as it is: nothing is written."""
        return self._activate(_line(line), name, by, via, registry, only_if_none=False)

    def ensure_default(self, line: str, name: str, by: str,
                       registry: Registry | None = None) -> Activation | None:
        """Activate `name` (RLR_RECIPE) with via "env" when the line has no active recipe;
        None when it has one already (a switch made since start-up is never undone)."""
        return self._activate(_line(line), name, by, "env", registry, only_if_none=True)

    def history(self, line: str, count: int = 50) -> list[dict]:
        """The line's switches and refusals, newest first: ts, action, name, revision, by,
        via, why."""
        out = []
        for eid, fields in self.r.xrevrange(keys.recipe_log(line), count=count):
            f = {text(k): text(v) for k, v in fields.items()}
            rev = f.get("revision", "")
            out.append({"id": text(eid), "ts": float(f.get("ts") or 0),
                        "action": f.get("action", ""), "name": f.get("name", ""),
                        "revision": int(rev) if rev.isdigit() else None,
                        "by": f.get("by", ""), "via": f.get("via", ""), "why": f.get("why", "")})
        return out

    # ------------------------------------------------------------------ inside

    def _activate(self, line: str, name: str, by: str, via: str, registry: Registry | None,
                  only_if_none: bool) -> Activation | None:
        key = keys.recipe_active(line)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    old = Activation.from_hash(line, pipe.hgetall(key))
                    if only_if_none and old is not None:
                        pipe.unwatch()
                        return None
                    recipe, rev = self._check(line, name, old, by, via, registry)
                    if old is not None and old.label == f"{name}@{rev}":
                        pipe.unwatch()  # already in force: a PLC may repeat its selection
                        return old
                    new = Activation(line=line, recipe=recipe, revision=rev, since=time.time(),
                                     by=by, via=via, previous=old)
                    pipe.multi()
                    pipe.hset(key, mapping=new.to_hash())
                    self._log(pipe, line, new.since, "activated", name, rev, by, via, "")
                    if not is_cluster(self.r):
                        pipe.publish(keys.RECIPE_CHANNEL, line)
                    pipe.execute()
                    if is_cluster(self.r):  # a cluster transaction holds keyed commands only
                        self.r.publish(keys.RECIPE_CHANNEL, line)
                    return new
                except redis.WatchError:
                    continue

    def _check(self, line: str, name: str, old: Activation | None, by: str, via: str,
               registry: Registry | None) -> tuple[Recipe, int]:
        """The recipe to activate, or the refusal logged and raised."""
        rev = None
        try:
            recipe, rev = self.get(name)
            why = None if registry is None else why_not(recipe, line, registry)
        except RecipeError as exc:
            why = str(exc).split(";")[0]
        if why is None:
            return recipe, rev
        stays = (f"the active recipe stays {old.label}" if old is not None
                 else f"line {line} still has no active recipe")
        why = f"{why}; {stays}"
        self._log(self.r, line, time.time(), "refused", name, rev, by, via, why)
        raise RecipeError(why)

    @staticmethod
    def _log(client, line: str, ts: float, action: str, name: str, rev: int | None, by: str,
             via: str, why: str) -> None:
        client.xadd(keys.recipe_log(line), {
            "ts": repr(ts), "action": action, "name": name,
            "revision": "" if rev is None else str(rev), "by": by, "via": via, "why": why},
            maxlen=LOG_MAXLEN, approximate=True)

    def _latest(self, name: str) -> tuple[Recipe, int] | None:
        try:
            ids.check("recipe", name)
        except ids.BadId as exc:
            raise RecipeError(str(exc)) from None
        raw = self.r.hget(keys.RECIPES, name)
        if raw is None:
            return None
        e = json.loads(raw)
        return from_json(json.dumps(e["recipe"])), int(e["revision"])

    def _check_number(self, recipe: Recipe) -> None:
        if recipe.number is None:
            return
        for row in self.list():
            if row["number"] == recipe.number and row["name"] != recipe.name:
                raise RecipeError(f"number: {recipe.number} is already recipe {row['name']} "
                                  "(the PLC selects recipes by number); give another")

    def _set_latest(self, name: str, rev: int, entry: str) -> None:
        """RECIPES[name] = revision `rev`, unless a newer one got there first."""
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(keys.RECIPES)
                    raw = pipe.hget(keys.RECIPES, name)
                    if raw is not None and json.loads(raw)["revision"] >= rev:
                        pipe.unwatch()
                        return
                    pipe.multi()
                    pipe.hset(keys.RECIPES, name, entry)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue


def registry_for(client: redis.Redis, line: str) -> Registry | None:
    """The model registry when `line` has a rollout in it; None when the line has none (its
    workers serve a model file), so a switch checks only that the recipe exists."""
    return Registry(client) if client.exists(keys.alias(line)) else None
