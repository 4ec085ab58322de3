//! A run: the sessions started at the ramp's pace (session i at i / ramp seconds, so
//! calls are placed at about that rate), a progress line every few seconds while they
//! go, and the report once every one of them has ended.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::Options;
use crate::audio::AudioBank;
use crate::cpu::cpu_seconds;
use crate::report::{CallRecord, Report};
use crate::session::{self, Gauges, Shared};

/// Runs `options.calls` sessions against the gateway and sums them up.
pub async fn run(options: Options) -> Report {
    // on a runtime thread: Opus encoding needs their deep stacks in debug builds
    let (codec, tone_hz) = (options.codec, options.tone_hz);
    let bank = tokio::task::spawn_blocking(move || AudioBank::new(codec, tone_hz))
        .await
        .map(Arc::new)
        .expect("preparing the audio");
    let shared = Arc::new(Shared {
        options: options.clone(),
        bank,
        gauges: Gauges::default(),
    });
    let tool_cpu = cpu_seconds(None);
    let gateway_cpu = options.gateway_pid.and_then(|p| cpu_seconds(Some(p)));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..options.calls)
        .map(|i| {
            let at = t0 + Duration::from_secs_f64(i as f64 / options.ramp);
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                session::run(i, shared).await
            })
        })
        .collect();
    let progress = (options.progress_secs > 0.0).then(|| {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let every = Duration::from_secs_f64(shared.options.progress_secs);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                eprintln!("{}", progress_line(&shared, t0));
            }
        })
    });
    let mut calls = Vec::with_capacity(tasks.len());
    for (i, task) in tasks.into_iter().enumerate() {
        calls.push(task.await.unwrap_or_else(|e| CallRecord {
            error: Some(format!("session task failed: {e}")),
            ..CallRecord::new(i)
        }));
    }
    if let Some(p) = progress {
        p.abort();
        eprintln!("{}", progress_line(&shared, t0));
    }
    let wall = t0.elapsed().as_secs_f64();
    let spent = |before: Option<f64>, now: Option<f64>| Some(((now? - before?) * 100.0).round() / 100.0);
    let tool = spent(tool_cpu, cpu_seconds(None));
    let gateway = spent(
        gateway_cpu,
        options.gateway_pid.and_then(|p| cpu_seconds(Some(p))),
    );
    Report::new(options, calls, wall, tool, gateway)
}

fn progress_line(shared: &Shared, t0: Instant) -> String {
    let g = &shared.gauges;
    let o = &shared.options;
    let elapsed = t0.elapsed().as_secs_f64();
    let started = ((elapsed * o.ramp).floor() as usize + 1).min(o.calls);
    let n = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed);
    format!(
        "[{elapsed:7.1}s] sessions {started}/{} started: {} up, {} registered, {} in call, {} done, {} failed",
        o.calls,
        n(&g.up),
        n(&g.registered),
        n(&g.in_call),
        n(&g.done),
        n(&g.failed)
    )
}
