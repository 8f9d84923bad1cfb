//! VRRPv3 (RFC 5798) virtual IP for the API server (skeleton).
