"""The Python development runtime: one component that runs any Python plugin from its sources.

`host dev` runs a plugin whose `plugin.toml` has a `[dev]` table on this component instead of
building the plugin: the host grants the plugin's folder read-only at `/plugin` and names the
entry module in `HANDLER_HOST_ENTRY`, and each instance imports that module from the folder on
its first call. A saved edit therefore serves at the next message, with no componentize build.
`host run` never uses it: production loads the plugin's own built component.

The interpreter is snapshotted when this runtime is built, so a module can only be imported at
run time if it is Python source in the plugin's folder or was imported here, at build time:
the standard library modules below. A plugin that needs another one is named in the error;
`host dev --no-dev-runtime` (or no `[dev]` table) builds it on every save instead.
"""

# Standard library modules a handler commonly uses, imported now so that they are in the
# snapshot (the runtime cannot read the standard library's files at run time).
import abc  # noqa: F401
import base64  # noqa: F401
import binascii  # noqa: F401
import bisect  # noqa: F401
import calendar  # noqa: F401
import collections  # noqa: F401
import contextlib  # noqa: F401
import copy  # noqa: F401
import csv  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import enum  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import hashlib  # noqa: F401
import heapq  # noqa: F401
import hmac  # noqa: F401
import importlib
import io  # noqa: F401
import itertools  # noqa: F401
import json  # noqa: F401
import math  # noqa: F401
import numbers  # noqa: F401
import operator  # noqa: F401
import os
import random  # noqa: F401
import re  # noqa: F401
import statistics  # noqa: F401
import string  # noqa: F401
import struct  # noqa: F401
import sys
import textwrap  # noqa: F401
import time  # noqa: F401
import types  # noqa: F401
import typing  # noqa: F401
import unicodedata  # noqa: F401
import urllib.parse  # noqa: F401
import uuid  # noqa: F401
import zlib  # noqa: F401

import handler_host  # noqa: F401  (the plugin imports it; its bindings are in the snapshot)
from handler_host import _report_crash
from wit_world import WitWorld as _WitWorld

SOURCE_MOUNT = "/plugin"
ENTRY_VAR = "HANDLER_HOST_ENTRY"

_world = None


def _refuse(message: str) -> RuntimeError:
    """An error that explains why the plugin cannot run here, in the one line the host keeps."""
    print(f"panicked: {message}", file=sys.stderr, flush=True)
    return RuntimeError(message)


def _plugin_world():
    """The plugin's `WitWorld`, imported from its folder on the instance's first call."""
    global _world
    if _world is not None:
        return _world
    entry = os.environ.get(ENTRY_VAR)
    if not entry:
        raise _refuse(
            f"the Python development runtime runs only under `host dev` ({ENTRY_VAR} is not set)"
        )
    sys.dont_write_bytecode = True  # the folder is read-only
    if SOURCE_MOUNT not in sys.path:
        sys.path.insert(0, SOURCE_MOUNT)
    try:
        module = importlib.import_module(entry)
    except ModuleNotFoundError as error:
        if error.name == entry:
            raise _refuse(
                f"`[dev] entry` names the module `{entry}`, but the plugin folder has no "
                f"`{entry}.py`"
            ) from None
        raise _refuse(
            f"`{error.name}` is neither in the plugin folder nor one of the standard library "
            "modules the Python development runtime carries: run `host dev --no-dev-runtime`, "
            "or remove `[dev]` from plugin.toml, to build the plugin on every save instead"
        ) from None
    except SyntaxError as error:
        raise _refuse(f"SyntaxError at {error.filename}:{error.lineno}: {error.msg}") from None
    except Exception as error:
        # An exception while importing: the plugin's own bug, named where it was raised.
        _report_crash(error)
        raise
    world = getattr(module, "WitWorld", None)
    if world is None:
        raise _refuse(
            f"the module `{entry}` defines no `WitWorld` (assign `WitWorld = "
            "handler_host.export(YourPlugin)`)"
        )
    _world = world()
    return _world


class WitWorld(_WitWorld):
    def describe(self):
        return _plugin_world().describe()

    def handle_command(self, command):
        return _plugin_world().handle_command(command)

    def handle_event(self, event):
        return _plugin_world().handle_event(event)

    def handle_query(self, query):
        return _plugin_world().handle_query(query)
