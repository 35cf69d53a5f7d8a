"""3Dconnexion SpaceMouse teleoperation through raw HID reports (hidapi), 6-DoF.

Report formats (little-endian int16 values, full scale about +-350):

* report 1, 7 bytes: translation x, y, z (older devices: SpaceNavigator, SpaceMouse Compact);
* report 1, 13 bytes: translation x, y, z then rotation x, y, z (SpaceMouse Wireless / Pro);
* report 2, 7 bytes: rotation x, y, z;
* report 3: button bitmask (bit 0 left button, bit 1 right button).

The device frame is x right, y toward the user, z down; the mapping turns it into the world
frame the operator faces (x forward = push the cap away, y left, z up = pull the cap up).
Left button: toggle gripper. Right button: save episode. Both together: discard.
"""

from __future__ import annotations

import struct
from typing import Protocol

import numpy as np

from robot_rl.teleop.base import DeviceNotFoundError, TeleopCommand, TeleopEvent

VENDOR_IDS = (0x046D, 0x256F)
"""Logitech (older 3Dconnexion devices) and 3Dconnexion."""

PRODUCT_IDS = {
    0xC626: "SpaceNavigator",
    0xC62B: "SpaceMouse Pro",
    0xC627: "SpaceExplorer",
    0xC62E: "SpaceMouse Wireless (cabled)",
    0xC62F: "SpaceMouse Wireless receiver",
    0xC631: "SpaceMouse Pro Wireless (cabled)",
    0xC632: "SpaceMouse Pro Wireless receiver",
    0xC635: "SpaceMouse Compact",
    0xC652: "Universal receiver",
}
"""Known SpaceMouse product ids."""

FULL_SCALE = 350.0
"""Raw axis value at full deflection."""


class HidDevice(Protocol):
    """The part of hidapi's device the teleoperator uses (a recorded-report fake in tests)."""

    def read(self, size: int, timeout_ms: int = 0) -> list[int]:
        """One report (empty when none is waiting)."""

    def close(self) -> None:
        """Close."""


def parse_report(report: bytes | list[int]) -> dict[str, tuple[float, ...] | int]:
    """Decode one raw HID report into translation, rotation (normalized) or buttons."""
    data = bytes(report)
    if not data:
        return {}
    kind = data[0]
    if kind in (1, 2) and len(data) >= 7:
        first = tuple(v / FULL_SCALE for v in struct.unpack("<3h", data[1:7]))
        if kind == 2:
            return {"rotation": first}
        if len(data) >= 13:
            return {"translation": first, "rotation": tuple(v / FULL_SCALE for v in struct.unpack("<3h", data[7:13]))}
        return {"translation": first}
    if kind == 3 and len(data) >= 2:
        return {"buttons": data[1]}
    return {}


class SpaceMouseTeleop:
    """6-DoF teleoperation from a SpaceMouse.

    Args:
        device: An open HID device (for tests); by default the first SpaceMouse hidapi finds.
    """

    name = "spacemouse"

    def __init__(self, device: HidDevice | None = None) -> None:
        self._device = device
        self._translation = (0.0, 0.0, 0.0)
        self._rotation = (0.0, 0.0, 0.0)
        self._buttons = 0
        self._gripper = 1.0

    def connect(self) -> None:
        """Open the first SpaceMouse hidapi lists."""
        if self._device is not None:
            return
        try:
            import hid
        except ImportError:
            raise DeviceNotFoundError("SpaceMouse teleoperation needs hidapi: pip install -e '.[teleop]'.") from None
        found = [d for d in hid.enumerate() if d["vendor_id"] in VENDOR_IDS and d["product_id"] in PRODUCT_IDS]
        if not found:
            wanted = ", ".join(f"{v:04x}:{p:04x} ({n})" for v in VENDOR_IDS for p, n in PRODUCT_IDS.items())
            raise DeviceNotFoundError(
                "no 3Dconnexion SpaceMouse found. Looked for USB HID vendor:product ids "
                f"{wanted}. Plug it in (or its wireless receiver), check `lsusb`, and give your user access to its "
                '/dev/hidraw* node, e.g. a udev rule: SUBSYSTEM=="hidraw", ATTRS{idVendor}=="256f", MODE="0666".'
            )
        device = hid.device()
        device.open_path(found[0]["path"])
        device.set_nonblocking(True)
        self._device = device

    def close(self) -> None:
        """Close the device."""
        if self._device is not None:
            self._device.close()
            self._device = None

    def read(self) -> TeleopCommand:
        """Drain the waiting HID reports and return the current command."""
        if self._device is None:
            raise RuntimeError("the SpaceMouse is not connected. Run `.connect()` first.")
        events: list[TeleopEvent] = []
        while True:
            report = self._device.read(64, 0)
            if not report:
                break
            decoded = parse_report(report)
            if "translation" in decoded:
                self._translation = decoded["translation"]  # type: ignore[assignment]
            if "rotation" in decoded:
                self._rotation = decoded["rotation"]  # type: ignore[assignment]
            if "buttons" in decoded:
                buttons = int(decoded["buttons"])  # type: ignore[arg-type]
                pressed = buttons & ~self._buttons
                if buttons & 0b11 == 0b11 and pressed:
                    events.append(TeleopEvent.DISCARD)
                elif pressed & 0b01:
                    self._gripper = -self._gripper
                elif pressed & 0b10:
                    events.append(TeleopEvent.SAVE)
                self._buttons = buttons
        tx, ty, tz = self._translation
        rx, ry, rz = self._rotation
        # Device (x right, y toward the user, z down) -> world (x forward, y left, z up).
        twist = np.array([-ty, -tx, -tz, -ry, -rx, -rz])
        return TeleopCommand(twist=np.clip(twist, -1.0, 1.0), gripper=self._gripper, events=events)
