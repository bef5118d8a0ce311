"""The audit trail: who changed what, when, how and from where (README, "Audit trail").

Every record is written by ``connectors.audit.trail.append``, in the transaction of the change it describes.
"""
