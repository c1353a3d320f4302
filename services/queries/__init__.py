"""The queries service: questions between the two sides of an agreement, answered on SLA clocks."""
