//! Time to compute the next fire of 100,000 distinct schedules.
//!
//! `cargo bench -p herald-actors --bench next_fire`. Expressions come from a
//! fixed-seed generator (minute/hour lists, steps, day-of-month and weekday
//! restrictions, 5 and 6 fields) spread over eight zones, half of them with
//! DST; "after" instants are spread over 2021 so some land on transitions.
//! Reports the median of 7 rounds after a warm-up round.

use std::collections::HashSet;
use std::hint::black_box;
use std::time::Instant;

use chrono::DateTime;
use herald_actors::schedule::{Schedule, parse_zone};

const SCHEDULES: usize = 100_000;
const ROUNDS: usize = 7;
const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tehran",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Tokyo",
    "Asia/Kolkata",
];

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

fn expression(rng: &mut Rng) -> String {
    let m = rng.next(60);
    let h = rng.next(24);
    match rng.next(6) {
        0 => format!("{m} {h} * * *"),
        1 => format!("{m} {h},{} * * {}", rng.next(24), rng.next(7)),
        2 => format!("*/{} {h}-{} * * *", 1 + rng.next(30), h + rng.next(24 - h)),
        3 => format!("{m} {h} {} * *", 1 + rng.next(28)),
        4 => format!("{} {m} */{} * * *", rng.next(60), 1 + rng.next(12)),
        _ => format!(
            "{m} {h} {} {} {}",
            1 + rng.next(28),
            1 + rng.next(12),
            rng.next(7)
        ),
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen = HashSet::new();
    let mut sources = Vec::with_capacity(SCHEDULES);
    while sources.len() < SCHEDULES {
        let expr = expression(&mut rng);
        let zone = ZONES[rng.next(ZONES.len() as u64) as usize];
        if seen.insert((expr.clone(), zone)) {
            sources.push((expr, zone));
        }
    }
    let start_2021 = 1_609_459_200i64;
    let afters: Vec<_> = (0..SCHEDULES)
        .map(|_| DateTime::from_timestamp(start_2021 + rng.next(365 * 86_400) as i64, 0).unwrap())
        .collect();

    let parse_start = Instant::now();
    let schedules: Vec<Schedule> = sources
        .iter()
        .map(|(expr, zone)| Schedule::parse(expr, parse_zone(zone).unwrap()).unwrap())
        .collect();
    let parse_ns = parse_start.elapsed().as_nanos() as f64 / SCHEDULES as f64;

    let mut round_ms = Vec::new();
    for round in 0..=ROUNDS {
        let start = Instant::now();
        for (schedule, after) in schedules.iter().zip(&afters) {
            black_box(schedule.next_after(black_box(*after)));
        }
        if round > 0 {
            round_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let ms = median(round_ms.clone());
    println!(
        "next_fire: {SCHEDULES} distinct schedules in {} zones",
        ZONES.len()
    );
    println!("  parse:          {parse_ns:.0} ns/schedule");
    println!(
        "  next fire, all: {ms:.1} ms median of {ROUNDS} rounds (min {:.1}, max {:.1})",
        round_ms.iter().copied().fold(f64::INFINITY, f64::min),
        round_ms.iter().copied().fold(0.0, f64::max)
    );
    println!("  next fire, one: {:.0} ns", ms * 1e6 / SCHEDULES as f64);
}
