# Copyright 2026 The hf_gradprobe developers. Licensed under the Apache License, Version 2.0.
"""The block pipeline: run a model's repeated blocks one at a time on cached hidden states.

Layerwise pruning decides block ``k`` on the hidden states that the already pruned blocks ``< k`` produce.
Blocks before ``k`` are swapped for pass-throughs and a pre-hook on block ``k`` replaces its input with the
cached states, so the model's own forward still builds attention masks and position embeddings: no
architecture-specific code. One buffer of hidden states (``windows x seq_len x hidden``, model dtype) is
updated in place as the pass moves down the blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..core.hooks import HookSet, replaced_forward
from ..core.layers import find_repeated_blocks


__all__ = [
    "BlockPipeline",
    "FinishedChildReplay",
    "Passthrough",
    "StopForward",
    "forward_without_loss",
    "input_groups",
    "stop_after",
    "stop_before",
]


class StopForward(Exception):
    """Raised by a hook to end a forward pass once the part of interest has run."""


class Passthrough(nn.Module):
    """Stands in for an already-processed block: its input hidden states are replaced anyway."""

    def __init__(self, returns_tuple: bool):
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.returns_tuple else hidden_states


def forward_without_loss(model: nn.Module, input_ids: torch.Tensor) -> None:
    """A forward pass for its hooks only; a hook may end it early with :class:`StopForward`."""
    try:
        model(input_ids=input_ids, use_cache=False)
    except StopForward:
        pass


@contextlib.contextmanager
def stop_after(module: nn.Module):
    """End every forward pass right after ``module`` ran (e.g. the last block: the LM head is never computed)."""

    def stop(module, args, output):
        raise StopForward

    handle = module.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def stop_before(module: nn.Module):
    """End every forward pass when ``module`` is about to run, after the pre-hooks registered before this one
    (e.g. statistics collectors reading its input): its own computation and everything after it are skipped."""

    def stop(module, args):
        raise StopForward

    handle = module.register_forward_pre_hook(stop)
    try:
        yield
    finally:
        handle.remove()


class FinishedChildReplay:
    """Within one block's passes, replays the outputs of the block's children that can no longer change.

    In sequential reconstruction a block is run once per group of layers sharing an input, each pass after the
    earlier groups were made final. A direct child of the block (e.g. the attention) that ran with final layers
    only, and after final layers only, gives the same output in every later pass: its output is recorded, batch by
    batch, in the first pass that computes it so, and returned instead of recomputed from then on (the statistics
    passes and the pass that writes the block's outputs). Results are identical; the cost is one buffer per
    recorded child, the size of the hidden-state cache.

    Args:
        block: the block being pruned.
        layers: its prunable layers (a layer is final once passed to :meth:`mark_final`).
    """

    def __init__(self, block: nn.Module, layers) -> None:
        self.block = block
        self.modules = [layer.module for layer in layers]
        self.children = [
            child
            for child in block.children()
            if any(module is inner for module in self.modules for inner in child.modules())
        ]
        self.final: set[nn.Module] = set()
        self.batch = 0
        self._dirty = False
        self._recording: dict[nn.Module, dict[int, object]] = {}
        self._replayed: dict[nn.Module, dict[int, object]] = {}

    def mark_final(self, layers) -> None:
        """``layers`` are pruned and reconstructed: they will not change again."""
        self.final.update(layer.module for layer in layers)

    @contextlib.contextmanager
    def active(self, record: bool = True):
        """Within the context, one pass over every batch (``batch`` set before each forward)."""
        hooks = HookSet()

        def start(module, args):
            self._dirty = False  # a new forward of the block: nothing non-final has run yet

        def ran(module, args):
            if module not in self.final:
                self._dirty = True

        def finished(module, args, output):
            if not self._dirty and module not in self._replayed:
                self._recording.setdefault(module, {})[self.batch] = _copy(output)

        def replay(outputs):
            # Copies both ways: the block's code may update a child's output in place.
            return lambda *args, **kwargs: _copy(outputs[self.batch])

        try:
            with hooks, contextlib.ExitStack() as replaced:
                hooks.pre_hook(self.block, start)
                for module in self.modules:
                    hooks.pre_hook(module, ran)
                for child in self.children:
                    if child in self._replayed:
                        replaced.enter_context(replaced_forward(child, replay(self._replayed[child])))
                    elif record:
                        hooks.post_hook(child, finished)
                yield self
                for child, outputs in self._recording.items():
                    if len(outputs) == self.batch + 1:  # recorded whole in this pass: replayed from the next one
                        self._replayed[child] = outputs
        finally:
            self._recording = {}


def _copy(output):
    """A copy of a module's output: its tensors cloned, in the same (possibly nested) tuples, lists and dicts."""
    if isinstance(output, torch.Tensor):
        return output.detach().clone()
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # a named tuple
        return type(output)(*(_copy(item) for item in output))
    if isinstance(output, (tuple, list)):
        return type(output)(_copy(item) for item in output)
    if isinstance(output, dict):
        return type(output)({key: _copy(value) for key, value in output.items()})
    return output


class BlockPipeline:
    """Runs ``model`` from block ``k`` on, with block ``k``'s input taken from a cache of hidden states.

    Args:
        model: the model; its ``input_ids`` windows are still fed so masks and positions are built as usual.
        windows: the calibration token windows (the cache holds one hidden state per window).
        batch_size: windows per forward when running a block over the whole cache.
        device: where ``input_ids`` go (the embedding's device).
    """

    def __init__(self, model: nn.Module, windows: torch.Tensor, batch_size: int, device: torch.device):
        self.model = model
        self.windows = windows
        self.batch_size = batch_size
        self.device = device
        _, self.blocks = find_repeated_blocks(model)
        self.returns_tuple = self._block_returns_tuple()
        self._inputs: torch.Tensor | None = None
        self._output: torch.Tensor | None = None
        # The windows of the batch being run (start, stop), for statistics that weight tokens by window.
        self.window_range: tuple[int, int] = (0, 0)

    def _window_batch(self, start: int, stop: int) -> torch.Tensor:
        return self.windows[start:stop].to(self.device)

    def _block_returns_tuple(self) -> bool:
        seen = {}

        def hook(module, args, output):
            seen["tuple"] = isinstance(output, tuple)
            raise StopForward

        handle = self.blocks[0].register_forward_hook(hook)
        try:
            with torch.no_grad():
                forward_without_loss(self.model, self._window_batch(0, 1))
        finally:
            handle.remove()
        return seen.get("tuple", False)

    def first_inputs(self) -> torch.Tensor:
        """The hidden states entering block 0 for every calibration window (the cache's first content)."""
        captured = []

        def hook(module, args, kwargs):
            states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            captured.append(states.detach())
            raise StopForward

        handle = self.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                for start in range(0, len(self.windows), self.batch_size):
                    forward_without_loss(self.model, self._window_batch(start, start + self.batch_size))
        finally:
            handle.remove()
        return torch.cat(captured)

    @contextlib.contextmanager
    def from_block(
        self, index: int, stop_after_block: bool = False, keep_graph: bool = False
    ) -> Iterator[BlockPipeline]:
        """Within the context, forwards start at block ``index`` on injected cached inputs; with ``keep_graph`` the
        block's output keeps its autograd graph (for :meth:`forward_block` under ``torch.enable_grad``)."""
        originals = [self.blocks[i] for i in range(index)]
        handles = []

        def inject(module, args, kwargs):
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = self._inputs
            else:
                args = (self._inputs, *args[1:])
            return args, kwargs

        def capture(module, args, output):
            output = output[0] if isinstance(output, tuple) else output
            self._output = output if keep_graph else output.detach()
            if stop_after_block:
                raise StopForward

        try:
            for i in range(index):
                self.blocks[i] = Passthrough(self.returns_tuple)
            handles.append(self.blocks[index].register_forward_pre_hook(inject, with_kwargs=True))
            handles.append(self.blocks[index].register_forward_hook(capture))
            yield self
        finally:
            for handle in handles:
                handle.remove()
            for i, block in enumerate(originals):
                self.blocks[i] = block
            self._inputs = self._output = None

    def run_block(
        self,
        index: int,
        hidden: torch.Tensor,
        hooks=None,
        update: bool = False,
        before: nn.Module | None = None,
        replay: FinishedChildReplay | None = None,
    ) -> torch.Tensor:
        """Run block ``index`` on every cached input, under ``hooks`` (a context manager, e.g. statistics
        collectors); with ``update`` its outputs replace the cache in place (the next block's inputs). ``before``
        ends each forward when that module is about to run, once ``hooks``' pre-hooks on it saw its input:
        statistics of a layer's input need neither the layer's output nor anything after it. ``replay`` returns the
        recorded outputs of the block's finished children instead of computing them (records nothing with
        ``update``: it is the block's last pass)."""
        if update and before is not None:
            raise ValueError("`update=True` needs the block's output: it cannot stop early with `before`.")
        early = stop_before(before) if before is not None else contextlib.nullcontext()
        with (
            torch.no_grad(),
            self.from_block(index, stop_after_block=True),
            hooks or contextlib.nullcontext(),
            early,
            replay.active(record=not update) if replay is not None else contextlib.nullcontext(),
        ):
            for number, start in enumerate(range(0, len(hidden), self.batch_size)):
                if replay is not None:
                    replay.batch = number
                self._inputs = hidden[start : start + self.batch_size]
                self.window_range = (start, min(start + self.batch_size, len(hidden)))
                forward_without_loss(self.model, self._window_batch(start, start + self.batch_size))
                if update:
                    hidden[start : start + self.batch_size] = self._output
        return hidden

    def forward_block(self, inputs: torch.Tensor, window_ids: torch.Tensor) -> torch.Tensor:
        """Inside :meth:`from_block` (``stop_after_block=True``): the block's output for ``inputs``, the cached
        hidden states of the windows ``window_ids`` (their token ids still build masks and positions)."""
        self._inputs = inputs
        forward_without_loss(self.model, self.windows[window_ids.cpu()].to(self.device))
        return self._output

    def window_batches(self, hidden: torch.Tensor) -> Iterator[torch.Tensor]:
        """Inside :meth:`from_block`: one window at a time, its cached input injected, for a forward+backward
        of the rest of the model (the probe)."""
        for start in range(len(hidden)):
            self._inputs = hidden[start : start + 1]
            yield self._window_batch(start, start + 1)


class _InputTracer(HookSet):
    """Records, in call order, which input tensor each of ``layers`` reads."""

    def __init__(self, layers) -> None:
        super().__init__()
        self.layers = list(layers)
        # The input tensors themselves are kept (not their id(): a freed tensor's id is reused by a later one).
        self.calls: list[tuple[torch.Tensor, object]] = []

    def attach(self) -> None:
        for layer in self.layers:
            self.pre_hook(layer.module, lambda module, args, layer=layer: self.calls.append((args[0], layer)))


def input_groups(pipeline: BlockPipeline, index: int, layers, hidden: torch.Tensor) -> list[list]:
    """Block ``index``'s ``layers`` grouped by the input tensor they read, in call order (q/k/v; o; gate/up; down),
    from one forward of the block on one cached window."""
    tracer = _InputTracer(layers)
    pipeline.run_block(index, hidden[:1], hooks=tracer)
    groups: list[list] = []
    inputs: list[torch.Tensor] = []
    for tensor, layer in tracer.calls:
        if any(layer is other for group in groups for other in group):
            continue
        position = next((i for i, seen in enumerate(inputs) if seen is tensor), None)
        if position is None:
            position = len(groups)
            inputs.append(tensor)
            groups.append([])
        groups[position].append(layer)
    missing = [layer for layer in layers if not any(layer is other for group in groups for other in group)]
    if missing:
        raise RuntimeError(f"{missing[0].name} did not run in the forward pass of block {index}.")
    return groups
