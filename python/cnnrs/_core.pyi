"""Type stubs for the native module ``cnnrs._core`` (the Rust core)."""

from typing import Any

import numpy as np
import numpy.typing as npt

class CnnrsError(Exception): ...
class DataFormatError(CnnrsError): ...
class TorchError(CnnrsError): ...

def torch_version() -> str: ...
def cuda_available() -> bool: ...
def cuda_device_count() -> int: ...

# --- ops ---
# --- end ops ---

# --- data ---
# --- end data ---

# --- metrics ---
# --- end metrics ---

# --- nn ---
# --- end nn ---
