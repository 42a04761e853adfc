"""Unit conversions, in exactly one place.

JSON loads are in requests per minute, the analyzer's interface in requests per second, the
queue kernels in requests per millisecond; times are milliseconds in the core and seconds in
the twin.
"""

from __future__ import annotations

MS_PER_S = 1000.0
S_PER_MIN = 60.0
S_PER_HR = 3600.0


def rpm_to_rps(rpm: float) -> float:
    return rpm / S_PER_MIN


def rps_to_rpm(rps: float) -> float:
    return rps * S_PER_MIN


def rps_to_rpms(rps: float) -> float:
    """Requests per second to requests per millisecond (queue kernel unit)."""
    return rps / MS_PER_S


def rpms_to_rps(rpms: float) -> float:
    return rpms * MS_PER_S


def ms_to_s(ms: float) -> float:
    return ms / MS_PER_S


def s_to_ms(s: float) -> float:
    return s * MS_PER_S
