"""The forwarder's presence on a TAK network: the first event of each of its connections.

TAK clients announce themselves with a contact event (ATAK sends its self-position ``a-f-G-U-C``
with ``<contact callsign>``). Servers rely on it: FreeTAKServer takes the FIRST event of a
connection as the client's identity and does not relay it; TAK Server and taky list the
contact. The forwarder is a sensor gateway, so it announces a friendly ground sensor
(``a-f-G-E-S``) with a stable uid (``TAK_UID``) and callsign (``TAK_CALLSIGN``); it sits at 0,0
with TAK's "unknown" errors because it has no position of its own. ``how="h-g-i-g-o"`` is what
TAK clients use for a configured, not measured, position.

Pure: builds bytes, knows nothing of sockets.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # nosec B405 # builds XML; parses nothing
from dataclasses import dataclass
from datetime import datetime, timedelta

from detection_api.cot import COT_VERSION, TAK_UNKNOWN_ERROR, cot_time, xml_safe

PRESENCE_TYPE = "a-f-G-E-S"
PRESENCE_HOW = "h-g-i-g-o"
# A contact goes stale after this; the forwarder re-announces itself well before (see
# PRESENCE_REFRESH_SECONDS) so the contact never disappears from a live map.
PRESENCE_STALE_SECONDS = 600
PRESENCE_REFRESH_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Presence:
    uid: str
    callsign: str
    version: str = "0"

    def derived(self, suffix: str, callsign_suffix: str) -> Presence:
        """The identity of a second connection of the same forwarder (e.g. the read-back one)."""
        return Presence(f"{self.uid}{suffix}", f"{self.callsign}{callsign_suffix}", self.version)

    def event(self, now: datetime, *, stale_seconds: int = PRESENCE_STALE_SECONDS) -> bytes:
        """The contact event, UTF-8 without an XML declaration."""
        stamp = cot_time(now)
        event = ET.Element(
            "event",
            {
                "version": COT_VERSION,
                "uid": xml_safe(self.uid),
                "type": PRESENCE_TYPE,
                "time": stamp,
                "start": stamp,
                "stale": cot_time(now + timedelta(seconds=stale_seconds)),
                "how": PRESENCE_HOW,
            },
        )
        unknown = f"{TAK_UNKNOWN_ERROR:.1f}"
        ET.SubElement(
            event, "point", {"lat": "0.0", "lon": "0.0", "hae": "0.0", "ce": unknown, "le": unknown}
        )
        detail = ET.SubElement(event, "detail")
        ET.SubElement(detail, "contact", {"callsign": xml_safe(self.callsign)})
        ET.SubElement(detail, "__group", {"name": "Cyan", "role": "Team Member"})
        ET.SubElement(
            detail,
            "takv",
            {
                "device": "detection-api",
                "platform": "detection-api",
                "os": "linux",
                "version": xml_safe(self.version),
            },
        )
        ET.SubElement(detail, "uid", {"Droid": xml_safe(self.callsign)})
        return ET.tostring(event, encoding="utf-8", xml_declaration=False)
