//! Authenticated peer discovery (multicast and static) (skeleton).
