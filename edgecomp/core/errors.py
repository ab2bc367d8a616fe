"""Error types. Anything derived from UserInputError is the user's to fix:
the CLI prints its one-line message and exits with code 2, no traceback."""


class EdgecompError(Exception):
    """Base class of every error edgecomp raises on purpose."""


class UserInputError(EdgecompError):
    """The user's input (recipe, path, device string, file) is wrong."""

    prefix = "error"

    def __str__(self) -> str:
        return f"{self.prefix}: {super().__str__()}"


class RecipeError(UserInputError):
    prefix = "recipe error"


class DataError(UserInputError):
    prefix = "data error"


class ModelError(UserInputError):
    prefix = "model error"


class RunDirError(UserInputError):
    prefix = "run error"


class PruneError(EdgecompError):
    """Pruning could not reach its target (not necessarily the user's fault)."""


class DivergenceError(EdgecompError):
    """Training diverged (non-finite loss) or accuracy collapsed; the last good checkpoint is kept."""


class DeviceError(UserInputError):
    """The device string, profile or connection is wrong: unknown profile, malformed ssh URL,
    unreachable host, wrong port, unknown host key, refused key."""

    prefix = "device error"


class RemoteError(EdgecompError):
    """A target-side program failed, or the connection dropped while it ran."""


class ExportError(EdgecompError):
    """An export step failed on its own terms: the ONNX model does not reproduce PyTorch within
    tolerance, or TensorRT could not build the engine (exit code 1)."""


class ExportInputError(UserInputError):
    """An export argument is wrong or cannot be served here (bad precision, TensorRT missing)."""

    prefix = "export error"


class EngineMismatchError(UserInputError):
    """A TensorRT engine was built for another device, TensorRT version, precision, shape or model."""

    prefix = "engine error"


class PruneTargetError(PruneError, UserInputError):
    """The recipe asks for a size the pruner cannot reach (limits per layer, ignored layers, ties): exit 2."""

    prefix = "prune error"
