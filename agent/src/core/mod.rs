//! The pure core of the agent: the first-boot state machine ([`plan`]), the
//! quorum decisions it asks ([`quorum`]), the recovery epoch rules
//! ([`epoch`]) and the persisted model it reads and writes ([`model`]).
//!
//! Everything here takes data (and `now` as a number) and returns data or
//! actions; nothing touches files, sockets, clocks, D-Bus or etcd. The
//! shell ([`crate::run`] and the modules it drives) does the I/O and feeds
//! the results back as [`plan::Event`]s. Keep it so: no `use` in `core/`
//! names a module outside it but for plain-data crates (`serde`, `sha2`).

pub mod epoch;
pub mod model;
pub mod plan;
pub mod quorum;
