//! Cluster PKI: CAs and certificates derived from the cluster secret (skeleton).
