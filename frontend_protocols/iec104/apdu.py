"""Just enough IEC 60870-5-104 APDU parsing to read command confirmations off the wire.

c104 2.2.1's client can miss a confirmation that arrives before it starts waiting (it then reports a time-out for
a command the RTU executed), and can turn a negative execute confirmation into success when the ACT_TERM follows
1 ms later. The adapter therefore decides each command from the ACT_CON frame itself.
"""

from dataclasses import dataclass

#: Command type identifications and the length of their information element after the IOA.
ELEMENT_LENGTH = {
    45: 1,  # C_SC_NA_1: SCO
    46: 1,  # C_DC_NA_1: DCO
    48: 3,  # C_SE_NA_1: NVA + QOS
    49: 3,  # C_SE_NB_1: SVA + QOS
    50: 5,  # C_SE_NC_1: IEEE 754 float + QOS
    100: 1,  # C_IC_NA_1: QOI (general interrogation)
    101: 1,  # C_CI_NA_1: QCC (counter interrogation)
}
C_IC_NA_1, C_CI_NA_1 = 100, 101
_SELECTABLE = frozenset({45, 46, 48, 49, 50})  # types whose qualifier carries the S/E bit
TYPE_ID = {"C_SC_NA_1": 45, "C_DC_NA_1": 46, "C_SE_NA_1": 48, "C_SE_NB_1": 49, "C_SE_NC_1": 50}

COT_ACTIVATION_CON = 7
COT_ACTIVATION_TERM = 10
#: Negative answers: unknown type identification, cause, common address, information object address.
COT_UNKNOWN = {44: "unknown type identification", 45: "unknown cause of transmission",
               46: "unknown common address", 47: "unknown information object address"}
_HEADER = 6  # start, length, four control octets
_ASDU_MIN = 9 + 1  # type, VSQ, COT, originator, CA (2), IOA (3), at least one element octet


@dataclass(frozen=True, slots=True)
class CommandAnswer:
    type_id: int
    cot: int
    negative: bool  # P/N bit
    common_address: int
    ioa: int
    select: bool  # S/E bit of a command's qualifier: the answer is to the select step

    @property
    def refusal(self) -> str:
        """Why the field refused, or "" if this is a positive answer."""
        if self.cot in COT_UNKNOWN:
            return f"RTU answered COT {self.cot}: {COT_UNKNOWN[self.cot]}"
        if self.negative:
            return f"negative confirmation of the {'select' if self.select else 'execute'}"
        return ""


def parse_command_answer(apdu: bytes) -> CommandAnswer | None:
    """A command confirmation (ACT_CON, ACT_TERM or COT 44..47) from one received APDU, else None."""
    if len(apdu) < _HEADER + _ASDU_MIN or apdu[0] != 0x68 or apdu[2] & 0x01:  # not an I-format frame
        return None
    type_id = apdu[6]
    length = ELEMENT_LENGTH.get(type_id)
    if length is None or len(apdu) < _HEADER + 9 + length:
        return None
    cot_octet = apdu[8]
    cot = cot_octet & 0x3F
    if cot != COT_ACTIVATION_CON and cot != COT_ACTIVATION_TERM and cot not in COT_UNKNOWN:
        return None
    ca = apdu[10] | apdu[11] << 8
    ioa = apdu[12] | apdu[13] << 8 | apdu[14] << 16
    qualifier = apdu[_HEADER + 9 + length - 1]
    select = type_id in _SELECTABLE and bool(qualifier & 0x80)
    return CommandAnswer(type_id, cot, bool(cot_octet & 0x40), ca, ioa, select)
