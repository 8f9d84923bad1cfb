//! The state machine under arbitrary event sequences: never panics, never
//! holds the VIP without quorum, and the VIP actions alternate (never two
//! adds or two removes in a row).
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vrrp::machine::{Action, Event, Health, Machine, Params, State};

fuzz_target!(|data: &[u8]| {
    let mut m = Machine::new(
        Params {
            vrid: 51,
            priority: 100,
            interval_cs: 20,
            preempt: data.first().is_some_and(|b| b & 1 == 0),
            preempt_delay: Duration::from_millis(u64::from(data.get(1).copied().unwrap_or(0)) * 10),
            local_addr: Ipv4Addr::new(10, 77, 0, 5),
            garp_burst: 3,
            garp_spacing: Duration::from_millis(100),
            garp_refresh: Duration::from_secs(10),
        },
        Health::OK,
    );
    let mut now = Instant::now();
    let mut has_vip = false;
    for chunk in data.chunks(3) {
        let [kind, a, b] = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        now += Duration::from_millis(u64::from(b) * 4);
        let event = match kind % 6 {
            0 => Event::Startup,
            1 => Event::Advert {
                src: Ipv4Addr::new(10, 77, 0, a),
                priority: b,
                interval_cs: u16::from(a).max(1),
            },
            2 => Event::Health(Health {
                quorum: a & 1 == 1,
                penalty: b,
            }),
            3 => Event::Shutdown,
            _ => {
                if let Some(d) = m.next_deadline() {
                    now = now.max(d);
                }
                Event::Timer
            }
        };
        for action in m.handle(event, now) {
            match action {
                Action::AddVip => {
                    assert!(!has_vip, "VIP added twice");
                    has_vip = true;
                }
                Action::RemoveVip => {
                    assert!(has_vip, "VIP removed while not held");
                    has_vip = false;
                }
                _ => {}
            }
        }
        assert_eq!(has_vip, m.state() == State::Master);
        if has_vip {
            assert!(m.health().quorum, "VIP held without quorum");
        }
        assert!(m.priority() >= 1);
    }
});
