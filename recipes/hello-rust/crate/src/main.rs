//! Prints a greeting with the architecture it was built for, then checks that
//! threads, channels and the allocator work on the target (a cross-built std
//! that links but can't start a thread is a classic toolchain mistake).

use std::sync::mpsc;
use std::thread;

/// Counts the primes below `n` in `[lo, hi)` by trial division.
fn count_primes(lo: u64, hi: u64) -> u64 {
    (lo..hi)
        .filter(|&k| k >= 2 && (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

fn main() {
    println!("hello from kiln ({})", std::env::consts::ARCH);

    const LIMIT: u64 = 100_000;
    const WORKERS: u64 = 4;
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let tx = tx.clone();
            thread::spawn(move || {
                let span = LIMIT / WORKERS;
                tx.send(count_primes(w * span, (w + 1) * span)).unwrap();
            })
        })
        .collect();
    drop(tx);
    for h in handles {
        h.join().expect("worker panicked");
    }
    let total: u64 = rx.iter().sum();
    // pi(100000) = 9592
    println!("{WORKERS} threads counted {total} primes below {LIMIT}");
    std::process::exit(if total == 9592 { 0 } else { 1 });
}
