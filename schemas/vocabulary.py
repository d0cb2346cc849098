"""The coded vocabulary of the contract: every value an agency may send is one of these.

Symbols follow the OCC Inquiry's checklist and local CSE screening tools (shared/DOMAIN.md).
Enum *values* are the Avro enum symbols; never rename one, only add (and add to schema history).
"""

from __future__ import annotations

from enum import StrEnum


class Sector(StrEnum):
    POLICE = "POLICE"
    EDUCATION = "EDUCATION"
    HEALTH = "HEALTH"
    SOCIAL_CARE = "SOCIAL_CARE"
    YOUTH_JUSTICE = "YOUTH_JUSTICE"
    VOLUNTARY = "VOLUNTARY"


class Sign(StrEnum):
    """Warning signs: what an agency observed."""

    MISSING_FROM_HOME_OR_CARE = "MISSING_FROM_HOME_OR_CARE"
    ABSENT_FROM_SCHOOL = "ABSENT_FROM_SCHOOL"
    PHYSICAL_INJURY = "PHYSICAL_INJURY"
    DRUG_OR_ALCOHOL_MISUSE = "DRUG_OR_ALCOHOL_MISUSE"
    OFFENDING = "OFFENDING"
    # Arrested or found alongside an adult markedly older than the child.
    ASSOCIATING_WITH_OLDER_ADULTS = "ASSOCIATING_WITH_OLDER_ADULTS"
    REPEAT_STI = "REPEAT_STI"
    PREGNANCY = "PREGNANCY"
    TERMINATION = "TERMINATION"
    CHANGE_IN_APPEARANCE = "CHANGE_IN_APPEARANCE"
    SEXUAL_BULLYING = "SEXUAL_BULLYING"
    ONLINE_VULNERABILITY = "ONLINE_VULNERABILITY"
    ESTRANGED_FROM_FAMILY = "ESTRANGED_FROM_FAMILY"
    UNEXPLAINED_GIFTS_OR_MONEY = "UNEXPLAINED_GIFTS_OR_MONEY"
    RECRUITING_OTHERS = "RECRUITING_OTHERS"
    POOR_MENTAL_HEALTH = "POOR_MENTAL_HEALTH"
    SELF_HARM = "SELF_HARM"
    SUICIDAL_THOUGHTS_OR_ATTEMPT = "SUICIDAL_THOUGHTS_OR_ATTEMPT"


class Vulnerability(StrEnum):
    """Context that raises risk; weighted lower and never alerts alone."""

    CHAOTIC_HOUSEHOLD = "CHAOTIC_HOUSEHOLD"
    HISTORY_OF_ABUSE = "HISTORY_OF_ABUSE"
    RECENT_BEREAVEMENT_OR_LOSS = "RECENT_BEREAVEMENT_OR_LOSS"
    GANG_ASSOCIATION = "GANG_ASSOCIATION"
    SCHOOL_WITH_EXPLOITED_CHILDREN = "SCHOOL_WITH_EXPLOITED_CHILDREN"
    LEARNING_DISABILITY = "LEARNING_DISABILITY"
    SEXUAL_ORIENTATION_UNSURE_OR_UNDISCLOSED = "SEXUAL_ORIENTATION_UNSURE_OR_UNDISCLOSED"
    FRIENDS_WITH_EXPLOITED_CHILDREN = "FRIENDS_WITH_EXPLOITED_CHILDREN"
    HOMELESS = "HOMELESS"
    LACKING_SAME_AGE_FRIENDS = "LACKING_SAME_AGE_FRIENDS"
    GANG_AFFECTED_NEIGHBOURHOOD = "GANG_AFFECTED_NEIGHBOURHOOD"
    IN_RESIDENTIAL_CARE = "IN_RESIDENTIAL_CARE"
    IN_HOSTEL_BB_OR_FOYER = "IN_HOSTEL_BB_OR_FOYER"
    LOW_SELF_ESTEEM = "LOW_SELF_ESTEEM"
    YOUNG_CARER = "YOUNG_CARER"


class SignificantIncident(StrEnum):
    """One is enough for an urgent (high) response."""

    UNDER_13_PENETRATIVE_SEX = "UNDER_13_PENETRATIVE_SEX"
    FOUND_IN_CAR_WITH_UNKNOWN_ADULTS = "FOUND_IN_CAR_WITH_UNKNOWN_ADULTS"
    EXCHANGING_SEX = "EXCHANGING_SEX"
    SEEN_IN_AREA_KNOWN_FOR_SEX_WORK = "SEEN_IN_AREA_KNOWN_FOR_SEX_WORK"
    REWARDED_FOR_INTRODUCING_PEERS = "REWARDED_FOR_INTRODUCING_PEERS"
    DISCLOSURE_WITHDRAWN = "DISCLOSURE_WITHDRAWN"
    FOUND_IN_UNEXPLAINED_TOWN_HOTEL_OR_CLUB = "FOUND_IN_UNEXPLAINED_TOWN_HOTEL_OR_CLUB"
    ABDUCTION = "ABDUCTION"
    LINKS_TO_TAXI_OR_TAKEAWAY_PREMISES = "LINKS_TO_TAXI_OR_TAKEAWAY_PREMISES"
    FOUND_IN_EXPLOITATION_PREMISES = "FOUND_IN_EXPLOITATION_PREMISES"


Indicator = Sign | Vulnerability | SignificantIncident

# Signs that mean sexual activity: for a child under 13 any one of them is high at once.
SEXUAL_ACTIVITY_SIGNS: frozenset[Sign] = frozenset(
    {Sign.REPEAT_STI, Sign.PREGNANCY, Sign.TERMINATION}
)


def indicator_from_symbol(symbol: str) -> Indicator:
    """Map an Avro/CSV symbol to its enum; raises KeyError for an unknown symbol."""
    for enum in (Sign, Vulnerability, SignificantIncident):
        if symbol in enum.__members__:
            return enum[symbol]
    raise KeyError(symbol)


class MissingType(StrEnum):
    MISSING = "MISSING"  # whereabouts unknown
    ABSENT = "ABSENT"  # not where expected, whereabouts known


class Tier(StrEnum):
    EMERGING = "EMERGING"
    ESCALATING = "ESCALATING"
    HIGH = "HIGH"

    @property
    def rank(self) -> int:
        return _TIER_RANK[self]


_TIER_RANK = {Tier.EMERGING: 1, Tier.ESCALATING: 2, Tier.HIGH: 3}


class Decision(StrEnum):
    NO_FURTHER_ACTION = "NO_FURTHER_ACTION"
    STRATEGY_MEETING = "STRATEGY_MEETING"
    REFERRAL_TO_CHILDRENS_SOCIAL_CARE = "REFERRAL_TO_CHILDRENS_SOCIAL_CARE"
    REFERRAL_TO_POLICE = "REFERRAL_TO_POLICE"
    REQUEST_REIDENTIFICATION = "REQUEST_REIDENTIFICATION"


class AckAction(StrEnum):
    ACKNOWLEDGED = "ACKNOWLEDGED"
    DECIDED = "DECIDED"


class RouteReason(StrEnum):
    RESPONSIBLE_AUTHORITY = "RESPONSIBLE_AUTHORITY"  # the child's local authority
    PLACING_AUTHORITY = "PLACING_AUTHORITY"  # looked-after child placed out of area
    FALLBACK = "FALLBACK"  # no route for the area: never dropped, sent to the fallback receiver
    ESCALATION = "ESCALATION"  # not acknowledged by its deadline
    # A copy for information to the host authority of a child placed out of area: the placing
    # authority leads; the host's hub is told, with no deadline and no escalation of its own.
    HOST_AUTHORITY = "HOST_AUTHORITY"


class AuditAction(StrEnum):
    EVENT_ACCEPTED = "EVENT_ACCEPTED"
    EVENT_DEADLETTERED = "EVENT_DEADLETTERED"
    ALERT_EMITTED = "ALERT_EMITTED"
    ALERT_ROUTED = "ALERT_ROUTED"
    ALERT_ESCALATED = "ALERT_ESCALATED"
    ALERT_VIEWED = "ALERT_VIEWED"
    ALERT_ACKNOWLEDGED = "ALERT_ACKNOWLEDGED"
    ALERT_DECIDED = "ALERT_DECIDED"
    REIDENTIFICATION_REQUESTED = "REIDENTIFICATION_REQUESTED"
    CHECKPOINT = "CHECKPOINT"
    REIDENTIFICATION_RECEIVED = "REIDENTIFICATION_RECEIVED"  # at the agency
    REIDENTIFICATION_APPROVED = "REIDENTIFICATION_APPROVED"
    REIDENTIFICATION_DECLINED = "REIDENTIFICATION_DECLINED"
    REIDENTIFICATION_DELIVERED = "REIDENTIFICATION_DELIVERED"  # the hub has the sealed answer
    REIDENTIFICATION_VIEWED = "REIDENTIFICATION_VIEWED"
    REIDENTIFICATION_EXPIRED = "REIDENTIFICATION_EXPIRED"
    REIDENTIFICATION_KEPT = "REIDENTIFICATION_KEPT"  # a decision to keep it past retention
    REIDENTIFICATION_REJECTED = "REIDENTIFICATION_REJECTED"  # an answer that failed its checks
    KEY_QUOTA_REFUSED = "KEY_QUOTA_REFUSED"
    # an operator sent a dead letter back to its source topic (safehub deadletter replay)
    DEADLETTER_REPLAYED = "DEADLETTER_REPLAYED"
    # the correlator could not read a linkage block's saved state (a poisoned changelog record)
    # and went on with the block empty: replay empties its copy of the block at the same point
    BLOCK_STATE_RESET = "BLOCK_STATE_RESET"


class LawfulBasis(StrEnum):
    """The basis for sharing (Data Protection Act 2018); OTHER's reason stays at the hub."""

    DPA_SCH8_PARA4_SAFEGUARDING = "DPA_SCH8_PARA4_SAFEGUARDING"
    DPA_SCH1_PARA18_SAFEGUARDING = "DPA_SCH1_PARA18_SAFEGUARDING"
    CONSENT = "CONSENT"
    OTHER = "OTHER"


class ReidPurpose(StrEnum):
    STRATEGY_MEETING = "STRATEGY_MEETING"
    SECTION_47_ENQUIRY = "SECTION_47_ENQUIRY"
    MASH_RESEARCH = "MASH_RESEARCH"
    CHILD_PROTECTION_CONFERENCE = "CHILD_PROTECTION_CONFERENCE"
    IMMEDIATE_PROTECTION = "IMMEDIATE_PROTECTION"


class ReidOutcome(StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    NOT_FOUND = "NOT_FOUND"  # no such handle in the agency's vault: never another child


class DeclineReason(StrEnum):
    BASIS_NOT_MET = "BASIS_NOT_MET"
    NOT_NECESSARY_OR_PROPORTIONATE = "NOT_NECESSARY_OR_PROPORTIONATE"
    PREJUDICES_INVESTIGATION = "PREJUDICES_INVESTIGATION"
    SHARED_BY_OTHER_ROUTE = "SHARED_BY_OTHER_ROUTE"
    OTHER = "OTHER"


class Rationale(StrEnum):
    """Why a hub decided what it did on an alert."""

    MULTI_AGENCY_PATTERN = "MULTI_AGENCY_PATTERN"
    SIGNIFICANT_INCIDENT = "SIGNIFICANT_INCIDENT"
    KNOWN_TO_SERVICES = "KNOWN_TO_SERVICES"
    THRESHOLD_NOT_MET = "THRESHOLD_NOT_MET"
    EXPLAINED_BY_CONTEXT = "EXPLAINED_BY_CONTEXT"
    NEEDS_MORE_INFORMATION = "NEEDS_MORE_INFORMATION"
