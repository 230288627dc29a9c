"""The trusted checker: a submission's score, computed in a process its code never ran in.

nbgrader runs the test cells in the student's kernel, after the student's code, which could
change them. The trusted checker computes the score again, apart:

- a **worker** (:mod:`.worker`), in the sandbox, with no coursekit and no scikit-learn,
  runs only the submission's own code cells (not a test cell), up to the last answer cell;
- the **checker**, this module, in the grader's own process tree, runs the gradebook's test
  cells (hidden tests included) with the same checks from ``coursekit.grading``, and with a
  *proxy* for each graded name: the functions and classes the assignment asks for, which
  the checker calls across the process boundary;
- only plain data crosses (:mod:`.wire`): tensors (dtype, shape, values), numbers, strings,
  None and containers of them. A student's class or function crosses as a handle; any other
  object arrives as its type's name and fails its check. Tensors, models and random
  generators given to the student's code come back changed if the code changed them;
  gradients flow back through a proxy (``backward`` asks the worker); an exception comes
  back as its type, message and line, and is raised again here;
- a call that reaches a ready-made function the assignment forbids (``FORBIDDEN`` in its
  grading module), or an import of a module a solution may not use, fails that call, so the
  name scores 0, and the student is flagged for review.

Each test cell's score follows nbgrader's own rule (``determine_grade``), so an honest
submission gets here exactly its in-notebook score. Run per shard by grading
(``python -m coursekit.classroom.checker job.json``), or call :func:`check_notebook`.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import importlib.util
import io
import json
import linecache
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import sandbox, wire
from .common import DEFAULT_TIMEOUT

#: modules a solution may not import: the reference, and libraries that do the work for it
BLOCKED = ("coursekit", "sklearn", "scipy", "lightning", "pytorch_lightning", "keras", "tensorflow", "jax")
ALLOWED = "a solution may use torch, numpy, math and Python's standard library"
WORKER_DIR = "/opt/coursekit-worker"
MAX_STARTS = 4              # workers per notebook (a cell that kills or hangs it costs one)


class WorkerLost(BaseException):
    """The worker died or did not answer in time. A BaseException: the checks' ``call``
    must not turn it into a teaching message and go on calling a dead worker."""


class RemoteError(Exception):
    """An exception of the student's code whose type is not a builtin exception."""


class _Foreign:
    """An object that is not plain data: only its type's name crossed."""
    __module__ = "__main__"

    def __repr__(self):
        return f"<{type(self).__name__} object>"


_FOREIGN: dict[str, type] = {}


def _foreign(name: str) -> _Foreign:
    name = name if isinstance(name, str) and name.isidentifier() else "object"
    if name not in _FOREIGN:
        _FOREIGN[name] = type(name, (_Foreign,), {"__module__": "__main__"})
    return _FOREIGN[name]()


# --------------------------------------------------------------------------- the worker process

def _hidden_packages() -> list[Path]:
    """The installed folders of the blocked modules that the sandbox would otherwise show."""
    folders = []
    roots = [Path(p) for p in sandbox._python_roots(course=False)]
    for name in BLOCKED:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            path = Path(location).resolve()
            if path.is_dir() and any(path.is_relative_to(r) for r in roots):
                folders.append(path)
    for root in roots:   # the base interpreter's own packages too, which the venv does not use
        for packages in [*root.glob("lib/python3*/site-packages"), *root.glob("lib/python3*/dist-packages")]:
            for name in BLOCKED:
                path = (packages / name).resolve()
                if path.is_dir() and path not in folders:
                    folders.append(path)
    return folders


class WorkerProcess:
    """One worker: started in the sandbox (or, with ``bwrap=None``, as a plain process),
    answering requests within a deadline."""

    def __init__(self, *, bwrap: str | None, limits: sandbox.Limits, files: list[Path] = (),
                 scratch_name: str = "work", threads: int = 1):
        here = Path(__file__).resolve().parent
        scripts = {here / "worker.py": f"{WORKER_DIR}/worker.py", here / "wire.py": f"{WORKER_DIR}/wire.py"}
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.private = Path(tempfile.mkdtemp(prefix="coursekit-worker-"))
        self.log = open(self.private / "stderr.log", "w+b")
        self.cgroups: list[Path] = []
        python = [sys.executable, "-E", "-s", "-B"]   # not -I: wire.py beside the script must import
        if bwrap:
            self.cgroups = sandbox.kernel_cgroups(self.private.name, limits)   # coursekit-worker-...
            if self.cgroups and os.environ.get(sandbox.KERNELS_DIR_ENV):   # for grading to remove, if we cannot
                with open(Path(os.environ[sandbox.KERNELS_DIR_ENV]) / sandbox.CGROUPS, "a") as f:
                    f.writelines(f"{group}\n" for group in self.cgroups)
            inside = sandbox.kernel_env({**os.environ, **env}, [])
            cmd = [*sandbox.enter_cgroups(self.cgroups),
                   *sandbox.bwrap_command(bwrap, limits, private=None, scratch_name=scratch_name,
                                          files=list(files), data=[], env=inside, course=False,
                                          binds=scripts, hide=_hidden_packages()),
                   "--", *sandbox.prlimit_command(limits), *python, f"{WORKER_DIR}/worker.py"]
        else:
            cmd = [*python, str(here / "worker.py")]
            env = {**os.environ, **env, "PYTHONNOUSERSITE": "1"}
        # in the checker's process group: stopping the checker stops its worker (and bwrap's
        # --die-with-parent takes the sandbox along)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     cwd=self.private, env=None if bwrap else env)
        self.reader = wire.Reader(self.proc.stdout.fileno())

    def request(self, header: dict, blobs: list, timeout: float) -> tuple[dict, list]:
        if self.proc.poll() is not None:
            raise WorkerLost(self._death())
        try:
            wire.write_message(self.proc.stdin.fileno(), header, blobs)
            return self.reader.read(timeout)
        except wire.WireTimeout:
            self.kill()
            raise WorkerLost(f"the cell ran longer than {timeout:.0f} s") from None
        except (wire.WireClosed, BrokenPipeError):
            self.proc.wait()
            raise WorkerLost(self._death()) from None
        except wire.WireError as e:
            self.kill()
            raise WorkerLost(f"the worker sent a malformed reply ({e})") from None

    def _death(self) -> str:
        code = self.proc.returncode
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with code {code}")
        self.log.seek(0)
        tail = self.log.read()[-300:].decode(errors="replace").strip().splitlines()
        return f"the worker running the submission {how}" + (f" ({tail[-1]})" if tail else "")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.kill()   # nothing in the worker is worth a clean exit (which takes torch 0.3 s)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        self.log.close()
        for group in self.cgroups:
            sandbox.remove_cgroup(group)
        shutil.rmtree(self.private, ignore_errors=True)


# --------------------------------------------------------------------------- proxies

class RemoteFunction:
    """The student's function (or bound method) in the worker, called across the boundary."""

    def __init__(self, session: "Session", handle: int, name: str, root: str):
        self._session, self._handle, self._root = session, handle, root
        self.__name__ = self.__qualname__ = name
        self.__module__ = "__main__"   # the student's, like a function defined in a notebook

    def __call__(self, *args, **kwargs):
        return self._session.call(self, args, kwargs)

    def __repr__(self):
        return f"<the student's {self.__name__}>"


class _RemoteClass(type):
    """The type of a proxy for the student's class: calling it makes an instance in the worker."""

    def __call__(cls, *args, **kwargs):
        return cls._session.call(cls, args, kwargs)


class RemoteObject:
    """An object of the student's class, living in the worker: attributes are read, set and
    called there."""

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        session = object.__getattribute__(self, "_session")
        return session.attribute(self, name)

    def __setattr__(self, name, value):
        object.__getattribute__(self, "_session").set_attribute(self, name, value)

    def __repr__(self):
        return f"<the student's {type(self).__name__} object>"


def _remote_class(session, handle, name, root) -> type:
    return _RemoteClass(name if name.isidentifier() else "Class", (RemoteObject,),
                        {"_session": session, "_handle": handle, "_root": root, "__module__": "__main__"})


class _Attach(torch.autograd.Function):
    """Connects a remote call's outputs to its inputs: backward asks the worker."""

    @staticmethod
    def forward(ctx, session, call_id, n_inputs, *tensors):
        ctx.session, ctx.call_id, ctx.n_inputs = session, call_id, n_inputs
        return tuple(t.clone() for t in tensors[n_inputs:])

    @staticmethod
    def backward(ctx, *grads):
        got = ctx.session.backward(ctx.call_id, grads, ctx.n_inputs)
        return (None, None, None, *got, *([None] * len(grads)))


def _tensors(value) -> list:
    """The tensors in a value, at the positions the worker counted them (``wire.tensors_in``).
    Any tensor counts here, where the worker counts only exact ones: a value decoded here
    holds exact tensors, a tensor subclass of the worker's arrives as a foreign object (not
    counted on either side), and an argument given back by identity is the checker's own
    tensor, perhaps an ``nn.Parameter``, which the worker received as an exact tensor."""
    return wire.tensors_in(value, exact=False)


def _replace(value, new: dict, depth=0):
    if isinstance(value, torch.Tensor):
        return new.get(id(value), value)
    if depth > wire.MAX_DEPTH:
        return value
    if type(value) is list:
        return [_replace(v, new, depth + 1) for v in value]
    if type(value) is tuple:
        return tuple(_replace(v, new, depth + 1) for v in value)
    if type(value) is dict:
        return {k: _replace(v, new, depth + 1) for k, v in value.items()}
    return value


class Session:
    """The checker's side of one worker: proxies, calls, and what the calls revealed."""

    def __init__(self, worker: WorkerProcess, forbidden_what: str = "function"):
        self.worker = worker
        self.deadline = time.monotonic() + DEFAULT_TIMEOUT
        self.proxies: dict[int, object] = {}
        self.sent: dict[int, object] = {}           # models and generators sent, by id (kept alive)
        self.forbidden: dict[str, list[str]] = {}  # graded name -> the ready-made functions it used
        self.blocked: list[str] = []
        self.forbidden_what = forbidden_what
        self._calls: dict[int, tuple[list, list]] = {}   # call id -> (tensors sent, inputs' positions)
        self.requests = 0
        self.notes: list[str] = []                  # what the worker noticed (threads), for review

    def request(self, header: dict, blobs: list | None = None) -> tuple[dict, list]:
        self.requests += 1
        header = {**header, "id": self.requests}
        reply, got = self.worker.request(header, blobs or [], max(0.0, self.deadline - time.monotonic()))
        if reply.get("id") != self.requests:   # a reply the student's code wrote itself
            self.worker.kill()
            raise WorkerLost("the worker's reply does not answer the request (the submission wrote to the "
                             "grader's channel)")
        for note in reply.get("notes") or []:
            if isinstance(note, str) and note[:200] not in self.notes:
                self.notes.append(note[:200])
        for name in reply.get("blocked") or []:
            if isinstance(name, str) and name not in self.blocked:
                self.blocked.append(name[:100])
        if "protocol" in reply:
            raise RuntimeError(f"the worker could not serve the request: {str(reply['protocol'])[:300]}")
        return reply, got

    # --------------------------------------------------------------- values
    def _proxy(self, data: dict, root: str | None):
        handle = data.get("handle")
        if type(handle) is not int:
            raise wire.WireError("a handle is not a number")
        if handle not in self.proxies:
            name = str(data.get("type", "object"))[:100]
            root = root or name
            kind = data.get("kind")
            if kind == "class":
                self.proxies[handle] = _remote_class(self, handle, name, root)
            elif kind == "function":
                self.proxies[handle] = RemoteFunction(self, handle, name, root)
            else:
                cls = type(name if name.isidentifier() else "Object", (RemoteObject,), {"__module__": "__main__"})
                obj = object.__new__(cls)
                for key, value in (("_session", self), ("_handle", handle), ("_root", root)):
                    object.__setattr__(obj, key, value)
                self.proxies[handle] = obj
        return self.proxies[handle]

    def decode(self, data, blobs, root: str | None, sent_tensors=()):
        def special(tag, d):
            if tag == "handle":
                return self._proxy(d, root)
            if tag == "foreign":
                return _foreign(d.get("foreign"))
            if tag == "arg" and type(d["arg"]) is int and 0 <= d["arg"] < len(sent_tensors):
                return sent_tensors[d["arg"]]
            raise wire.WireError(f"unknown value tag {tag!r}")
        return wire.decode(data, blobs, special)

    def encode(self, value, blobs: list, sent_tensors: list):
        def extra(v):
            if isinstance(v, (RemoteFunction, RemoteObject)) or isinstance(v, _RemoteClass):
                return {"proxy": object.__getattribute__(v, "_handle")}
            if isinstance(v, torch.Tensor):
                sent_tensors.append(v)
                return wire.encode_tensor(v, blobs)
            if isinstance(v, nn.Module):
                if id(v) not in self.sent:
                    self.sent[id(v)] = v
                    blobs.append(pickle.dumps(v))
                    return {"module": id(v), "pickle": len(blobs) - 1}
                return {"module": id(v), "training": [m.training for m in v.modules()],
                        "state": wire.encode({k: t.detach() for k, t in v.state_dict().items()}, blobs)}
            if isinstance(v, torch.Generator):
                self.sent[id(v)] = v
                blobs.append(v.get_state().numpy().tobytes())
                return {"generator": id(v), "state": len(blobs) - 1}
            try:
                blobs.append(pickle.dumps(v))   # a function or class of torch's, by reference
            except Exception:  # noqa: BLE001
                raise wire.WireError(f"a {type(v).__name__} cannot be given to the student's code") from None
            return {"pickled": len(blobs) - 1}
        return wire.encode(value, blobs, extra)

    # --------------------------------------------------------------- calls
    def _raise(self, reply: dict, root: str):
        error = reply.get("error") or {}
        kind, message = str(error.get("type", "Exception"))[:100], str(error.get("message", ""))[:2000]
        cls = getattr(builtins, kind, None)
        if not (isinstance(cls, type) and issubclass(cls, Exception)) or issubclass(cls, (OSError, UnicodeError)):
            cls = type(kind if kind.isidentifier() else "RemoteError", (RemoteError,), {})
        try:
            exc = cls(message)
        except Exception:  # noqa: BLE001 - an exception class with other arguments
            exc = RemoteError(f"{kind}: {message}")
        exc.student_line = str(error.get("line", ""))[:500]
        raise exc

    def _forbidden(self, reply: dict, root: str):
        hits = [str(h)[:200] for h in reply.get("forbidden") or []]
        if hits:
            known = self.forbidden.setdefault(root, [])
            known += [h for h in hits if h not in known]
        if root in self.forbidden:
            from coursekit.grading import CheckFailure
            raise CheckFailure(f"your code calls a ready-made {self.forbidden_what} "
                               f"({', '.join(self.forbidden[root][:3])}); write it with plain tensor "
                               f"operations. {root} scores 0 and your submission is flagged for review.")

    def _apply_updates(self, updates, blobs, sent_tensors):
        for update in updates or []:
            if "index" in update:
                i = update["index"]
                if type(i) is not int or not 0 <= i < len(sent_tensors):
                    raise wire.WireError("an update of an unknown argument")
                target, new = sent_tensors[i], wire.decode_tensor(update["value"], blobs)
                with torch.no_grad():
                    if new.shape == target.shape and new.dtype == target.dtype:
                        target.copy_(new)
                if target.is_leaf and update.get("requires_grad") in (True, False) and \
                        (target.is_floating_point() or not update["requires_grad"]):
                    target.requires_grad_(update["requires_grad"])
            elif "module" in update:
                module = self.sent.get(update["module"])
                if not isinstance(module, nn.Module):
                    raise wire.WireError("an update of an unknown model")
                state, grads = wire.decode(update["state"], blobs), wire.decode(update["grads"], blobs)
                with torch.no_grad():
                    for name, tensor in module.state_dict(keep_vars=True).items():
                        new = state.get(name) if isinstance(state, dict) else None
                        if type(new) is torch.Tensor and new.shape == tensor.shape and new.dtype == tensor.dtype:
                            tensor.copy_(new)
                for m, training in zip(module.modules(), update.get("training") or []):
                    m.training = bool(training)
                for name, p in module.named_parameters():
                    g = grads.get(name) if isinstance(grads, dict) else None
                    p.grad = g if type(g) is torch.Tensor and g.shape == p.shape and g.dtype == p.dtype else None
            elif "generator" in update:
                gen = self.sent.get(update["generator"])
                state = torch.frombuffer(bytearray(blobs[update["state"]]), dtype=torch.uint8).clone()
                if isinstance(gen, torch.Generator) and state.numel() == gen.get_state().numel():
                    gen.set_state(state)

    def call(self, target, args, kwargs):
        root = object.__getattribute__(target, "_root")
        self._forbidden({}, root)
        blobs, sent_tensors = [], []
        data = self.encode((list(args), dict(kwargs)), blobs, sent_tensors)
        grad = torch.is_grad_enabled()
        reply, got = self.request({"op": "call", "target": object.__getattribute__(target, "_handle"),
                                   "args": data, "grad": grad}, blobs)
        self._apply_updates(reply.get("updates"), got, sent_tensors)
        self._forbidden(reply, root)
        if "error" in reply:
            self._raise(reply, root)
        value = self.decode(reply.get("value"), got, root, sent_tensors)
        call_id, positions = reply.get("call"), reply.get("outputs")
        if grad and type(call_id) is int and type(positions) is list:
            index = [i for i, t in enumerate(sent_tensors) if t.requires_grad]
            found = _tensors(value)
            outputs = [found[i] for i in positions if type(i) is int and 0 <= i < len(found)]
            if index and outputs and len(outputs) == len(positions):
                for t in outputs:
                    t.requires_grad_(False)
                self._calls[call_id] = (sent_tensors, index)
                attached = _Attach.apply(self, call_id, len(index), *[sent_tensors[i] for i in index], *outputs)
                value = _replace(value, {id(o): a for o, a in zip(outputs, attached)})
        return value

    def backward(self, call_id, grads, n_inputs):
        blobs: list = []
        data = wire.encode(tuple(grads), blobs, lambda v: wire.encode_tensor(v, blobs)
                           if isinstance(v, torch.Tensor) else None)
        reply, got = self.request({"op": "backward", "call": call_id, "grads": data}, blobs)
        if "error" in reply:
            self._raise(reply, "backward")
        by_index = wire.decode(reply.get("value"), got)
        sent, index = self._calls.pop(call_id, ([], []))
        out = []
        for i in index[:n_inputs]:
            g = by_index.get(i) if isinstance(by_index, dict) else None
            ok = type(g) is torch.Tensor and g.shape == sent[i].shape and g.dtype == sent[i].dtype
            out.append(g if ok else None)
        return out

    def attribute(self, obj, name):
        root = object.__getattribute__(obj, "_root")
        reply, got = self.request({"op": "getattr", "target": object.__getattribute__(obj, "_handle"),
                                   "name": str(name)})
        self._forbidden(reply, root)
        if "error" in reply:
            self._raise(reply, root)
        return self.decode(reply.get("value"), got, root)

    def set_attribute(self, obj, name, value):
        root = object.__getattribute__(obj, "_root")
        blobs: list = []
        data = self.encode(value, blobs, [])
        reply, _ = self.request({"op": "setattr", "target": object.__getattribute__(obj, "_handle"),
                                 "name": str(name), "value": data}, blobs)
        if "error" in reply:
            self._raise(reply, root)


# --------------------------------------------------------------------------- the assignment's cells

@dataclass
class Assignment:
    """What the checker needs of one notebook of an assignment, from the instructor's files:
    the setup cells (the notebook's locked imports), the graded names (defined in the answer
    cells), the autograded test cells (the gradebook's source, hidden tests included), the
    answer cells' ids, and the forbidden ready-made functions (the grading module's ``FORBIDDEN``)."""
    name: str
    setup: list[str]
    graded: list[str]
    tests: list[tuple[str, str, float]]           # (grade_id, source, points), in notebook order
    answers: list[str]                            # grade_ids of the answer cells
    forbidden: tuple[str, ...] = ()
    forbidden_what: str = "function"

    @classmethod
    def from_release(cls, assignment: str, release_nb: dict, test_sources: dict[str, tuple[str, float]]):
        setup, graded, tests, answers = [], [], [], []
        for cell in release_nb["cells"]:
            meta = (cell.get("metadata") or {}).get("nbgrader") or {}
            source = "".join(cell.get("source", ""))
            if cell.get("cell_type") != "code":
                continue
            if meta.get("solution"):
                answers.append(meta.get("grade_id"))
                graded += [node.name for node in ast.parse(source).body
                           if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
            elif meta.get("grade"):
                gid = meta.get("grade_id")
                source, points = test_sources.get(gid, (source, meta.get("points", 0)))
                tests.append((gid, source, float(points)))
            elif meta.get("locked") and not answers:
                setup.append(source)
        module = importlib.import_module(f"coursekit.grading.{assignment}")
        return cls(assignment, setup, graded, tests, answers, tuple(getattr(module, "FORBIDDEN", ())),
                   getattr(module, "FORBIDDEN_WHAT", "function"))

    def student_cells(self, nb: dict) -> list[tuple[str, str, bool]]:
        """The submission's own code cells to run: every code cell that is not a test cell,
        up to the last answer cell, as ``(label, source, is an answer cell)``."""
        tests = {gid for gid, _, _ in self.tests}
        code = [c for c in nb.get("cells", []) if isinstance(c, dict) and c.get("cell_type") == "code"]

        def gid(cell):
            meta = cell.get("metadata")
            meta = meta.get("nbgrader") if isinstance(meta, dict) else None
            return meta.get("grade_id") if isinstance(meta, dict) else None
        last = max((i for i, c in enumerate(code) if gid(c) in self.answers), default=len(code) - 1)
        out = []
        for i, cell in enumerate(code[:last + 1]):
            if gid(cell) in tests:
                continue
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            out.append((f"Cell In[{len(out) + 1}]", source, gid(cell) in self.answers))
        return out


@dataclass
class Result:
    """The trusted score of one notebook: per autograded cell, its score and its message."""
    scores: dict[str, float] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    forbidden: dict[str, list[str]] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.scores.values())


def _run_test_cell(source: str, namespace: dict, label: str) -> tuple[list[dict], str]:
    """Run a test cell as the kernel would; its outputs as nbformat outputs, and the message."""
    outputs, message = [], ""
    err = io.StringIO()
    linecache.cache[label] = (len(source), None, source.splitlines(True), label)
    with warnings.catch_warnings(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("default")
        try:
            tree = ast.parse(source, label)
            last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
            exec(compile(tree, label, "exec"), namespace)
            value = eval(compile(ast.Expression(last.value), label, "eval"), namespace) if last else None
        except Exception as e:  # noqa: BLE001 - the student's failure, or a check's
            outputs.append({"output_type": "error", "ename": type(e).__name__, "evalue": str(e), "traceback": []})
            message = f"{type(e).__name__}: {e}"
        except WorkerLost as e:
            outputs.append({"output_type": "error", "ename": "WorkerLost", "evalue": str(e), "traceback": []})
            message = str(e)
        else:
            if value is not None:
                outputs.append({"output_type": "execute_result", "execution_count": 1, "metadata": {},
                                "data": {"text/plain": repr(value)}})
    if err.getvalue():
        outputs.append({"output_type": "stream", "name": "stderr", "text": err.getvalue()})
        message = message or err.getvalue()[:500]
    return outputs, message


def _grade(outputs: list[dict], points: float) -> float:
    import nbformat
    from nbgrader.utils import determine_grade
    cell = nbformat.v4.new_code_cell(source="", metadata={"nbgrader": {"grade": True, "solution": False,
                                                                        "points": points, "grade_id": "x"}})
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return float(determine_grade(cell)[0])


def check_notebook(spec: Assignment, nb: dict, *, bwrap: str | None, limits: sandbox.Limits | None = None,
                   files: list[Path] = (), timeout: float = DEFAULT_TIMEOUT, threads: int = 1,
                   worker: WorkerProcess | None = None) -> Result:
    """The trusted score of a submitted notebook ``nb`` (a dict) of ``spec``'s assignment.

    The worker runs in the sandbox when ``bwrap`` is bubblewrap's path (``None``: a plain
    process, for ``--no-sandbox``). ``files`` are the student's submitted files (its scratch
    folder's), ``timeout`` the seconds each test cell may take. ``worker``: a running worker
    to use first, left running (tests score many honest notebooks with one; grading never
    shares a worker between students)."""
    started = time.monotonic()
    limits = limits or sandbox.Limits()
    result = Result()
    cells = spec.student_cells(nb)
    setup: dict = {"__name__": "__main__", "__builtins__": builtins}
    for source in spec.setup:
        exec(compile(source, "<setup>", "exec"), setup)
    given, worker, session, namespace, starts = worker, None, None, None, 0

    def start():
        nonlocal worker, session, namespace, starts
        if worker is not None and worker is not given:
            worker.close()
        worker = session = namespace = None
        if starts == 0 and given is not None and given.proc.poll() is None:
            worker = given
        elif starts < MAX_STARTS:
            worker = WorkerProcess(bwrap=bwrap, limits=limits, files=files, scratch_name=spec.name, threads=threads)
        else:
            return
        starts += 1
        session = Session(worker, spec.forbidden_what)
        session.deadline = time.monotonic() + timeout * (len(cells) + 1)
        try:
            namespace = _prepare(session, spec, cells, setup, result, timeout)
        except WorkerLost as e:
            result.problems.append(f"the submission's cells did not finish: {e}")

    try:
        for gid, source, points in spec.tests:
            if worker is None or worker.proc.poll() is not None:
                start()
            if namespace is None:
                result.scores[gid], result.messages[gid] = 0.0, "the worker could not run the submission"
                continue
            session.deadline = time.monotonic() + timeout
            outputs, message = _run_test_cell(source, dict(namespace), f"<test cell {gid}>")
            result.scores[gid] = _grade(outputs, points)
            if message:
                result.messages[gid] = message[:1000]
            if any(o.get("ename") == "WorkerLost" for o in outputs):
                result.problems.append(f"{gid}: {message}")
            for name, hits in session.forbidden.items():
                known = result.forbidden.setdefault(name, [])
                known += [h for h in hits if h not in known]
            result.blocked += [b for b in session.blocked if b not in result.blocked]
            result.problems += [n for n in session.notes if n not in result.problems]
    finally:
        if worker is not None and worker is not given:
            worker.close()
    result.seconds = time.monotonic() - started
    return result


def _prepare(session: Session, spec: Assignment, cells, setup: dict, result: Result, timeout: float) -> dict:
    """Run the submission's cells in the worker; the test cells' namespace: the setup's names
    and a proxy for each graded name the submission defines. An import refused in an answer
    cell is the student's answer using what it may not; in another cell (a copy of a test
    cell, an experiment) it is only noted."""
    reply, _ = session.request({"op": "exec", "cells": cells, "graded": spec.graded, "blocked": list(BLOCKED),
                                "allowed": ALLOWED, "forbidden": list(spec.forbidden), "timeout": timeout})
    notes = [f"{label}: {str(error)[:200]}" for label, error in (reply.get("errors") or [])[:5]]
    for label, names, answer in reply.get("blocked_cells") or []:
        if answer:
            session.blocked += [str(n)[:100] for n in names if str(n)[:100] not in session.blocked]
    for note in notes:
        if note not in result.problems:
            result.problems.append(note)
    namespace = dict(setup)
    for name in reply.get("defined") or []:
        if name not in spec.graded:
            continue
        try:
            got, blobs = session.request({"op": "get", "name": name})
            if "error" not in got:
                namespace[name] = session.decode(got.get("value"), blobs, name)
        except (RuntimeError, wire.WireError) as e:   # a value that cannot cross: the name is missing
            result.problems.append(f"{name}: its value cannot be given to the checks ({str(e)[:200]})")
    return namespace


# --------------------------------------------------------------------------- a shard's job

def run_job(job: dict) -> dict:
    """Check the students of a grading shard as nbgrader finishes them: ``job`` names the
    course, assignment, shard, students, sandbox and limits. Each student's results are
    written to ``job["output"]`` as soon as they are known (``{student: {notebook: Result as a
    dict}}``), so that an interrupted grading keeps them; it stops when nbgrader has exited
    and every student it finished is checked."""
    from . import gradebook
    from .common import NBGRADER_DONE, graded_students, release_notebooks
    course, assignment, shard = Path(job["course"]), job["assignment"], Path(job["shard"])
    limits = sandbox.Limits(**job["limits"])
    specs = {}
    for name, nb in release_notebooks(course, assignment).items():
        tests = gradebook.test_cells(gradebook.db_path(course), assignment, name[:-len(".ipynb")])
        specs[name] = Assignment.from_release(assignment, nb, tests)
    results: dict = {}
    pending = list(job["students"])
    while pending:
        nbgrader_done = (shard / NBGRADER_DONE).exists()   # read first: nothing finishes after it
        ready = [s for s in pending if s in graded_students(shard, assignment, list(specs))]
        if not ready:
            if nbgrader_done:
                break
            time.sleep(0.2)
            continue
        for student in ready:
            pending.remove(student)
            results[student] = _check_student(job, specs, student, limits)
            out = Path(job["output"])
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            tmp.replace(out)
    return results


def _check_student(job: dict, specs: dict, student: str, limits: sandbox.Limits) -> dict:
    folder = Path(job["submitted"]) / student / job["assignment"]
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()) if folder.is_dir() else []
    out = {}
    for name, spec in specs.items():
        try:
            nb = json.loads((folder / name).read_text())
            got = check_notebook(spec, nb, bwrap=job["bwrap"], limits=limits, files=files,
                                 timeout=job["timeout"], threads=job.get("threads", 1))
            out[name] = asdict(got)
        except Exception as e:  # noqa: BLE001 - one student's failure must not stop the shard
            out[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
    return out


def main(argv=None):
    run_job(json.loads(Path((argv or sys.argv[1:])[0]).read_text()))


if __name__ == "__main__":
    main()
