//! Soak (issue 11): connect/disconnect cycles the way browsers do them (clean closes,
//! resets, reloads in the middle of the registration), against Kamailio: afterwards no
//! lease, RTP port, line or Kamailio contact may be left, and the gateway's memory must
//! be back within 10 % of where it was after warming up.
//!
//!   cargo test -p sipline --test soak -- --nocapture                  (CI: 1000 cycles)
//!   SOAK_CYCLES=10000 cargo test --release -p sipline --test soak -- --nocapture

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The ways a browser leaves.
async fn one_cycle(url: &str, i: usize) {
    // a worker may cycle faster than lines unregister: the pool is then briefly full,
    // and the newcomer waits for an account on its way back or is told so
    let mut b = loop {
        let mut b = Browser::connect(url).await;
        let admitted = b.wait_for("registrationStateChanged", |_| true, WAIT).await;
        if admitted["state"] == "accepted" {
            break b;
        }
        assert_eq!(admitted["state"], "connectionLimit", "cycle {i}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    match i % 4 {
        // a reload while the REGISTER may still be in flight
        0 => b.close().await,
        1 => b.reset(),
        // leave registered, cleanly or with a reset
        2 => {
            b.wait_line("registered", WAIT).await;
            b.close().await
        }
        _ => {
            b.wait_line("registered", WAIT).await;
            b.reset()
        }
    }
}

/// Runs `cycles` cycles on `workers` concurrent browsers.
async fn cycles(url: &str, cycles: usize, workers: usize) -> Duration {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let url = url.to_owned();
            tokio::spawn(async move {
                for i in (w..cycles).step_by(workers) {
                    one_cycle(&url, i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    t0.elapsed()
}

async fn settled(sipline: &Sipline, pbx: &Pbx) {
    sipline
        .wait_metrics(Duration::from_secs(20), |m| {
            m["sipline_pool_leased"] == 0.0
                && m["sipline_sip_lines"] == 0.0
                && m["sipline_sessions"] == 0.0
                && m["sipline_rtp_ports_in_use"] == 0.0
                && m["sipline_http_connections"] <= 1.0
        })
        .await;
    pbx.wait_users(WAIT, |u| u.is_empty());
    // transactions linger for Timer K (5 s) at most
    sipline
        .wait_metrics(Duration::from_secs(15), |m| {
            m["sipline_sip_client_transactions"] == 0.0 && m["sipline_sip_server_transactions"] == 0.0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_disconnect_cycles_leave_nothing_behind() {
    let total: usize = std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let workers = 8;
    let slot = Slot::new(110);
    let pbx = Pbx::start(slot.pbx);
    let config = base_config(slot).replace("[http]\n", "[http]\nmax_sessions_per_ip = 100\n")
        + "\n[pool]\ndomain = \"127.0.0.1\"\nrange = { from = 880, to = 898 }\n"
        + "\n[media]\nrtp_ports = \"49600-49699\"\n";
    let sipline = Sipline::start(&no_resume(&config));
    let url = sipline.ws_url();

    let warm_up = (total / 10).clamp(50, 1000);
    cycles(&url, warm_up, workers).await;
    settled(&sipline, &pbx).await;
    let rss_start = sipline.rss_kib();

    let took = cycles(&url, total, workers).await;
    settled(&sipline, &pbx).await;
    let rss_end = sipline.rss_kib();
    println!(
        "soak: {total} cycles ({workers} at a time) in {took:.1?}, {:.0} cycles/s; RSS after warming up \
         {rss_start} KiB, after the soak {rss_end} KiB ({:+.1} %)",
        total as f64 / took.as_secs_f64(),
        (rss_end as f64 / rss_start as f64 - 1.0) * 100.0
    );
    assert!(
        rss_end as f64 <= rss_start as f64 * 1.10,
        "RSS grew from {rss_start} to {rss_end} KiB"
    );
}
