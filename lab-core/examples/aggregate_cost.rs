//! Adds metrics to one server's windows, for counting instructions per metric with callgrind:
//!
//! ```sh
//! cargo build --release -p lab-core --example aggregate_cost
//! valgrind --tool=callgrind target/release/examples/aggregate_cost 500 200000
//! valgrind --tool=callgrind target/release/examples/aggregate_cost 50000 200000
//! ```
//!
//! Instruction counts do not depend on what else the machine is doing, unlike times: this is how
//! `docs/performance.md` shows that the cost per metric does not grow with the buffer size.

use lab_core::aggregate::{ServerWindows, WindowSpec};
use lab_core::{Network, Readings};

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let capacity = args.next().unwrap_or(500);
    let metrics = args.next().unwrap_or(200_000);
    let mut windows = ServerWindows::new(&WindowSpec::default(), capacity).expect("valid capacity");
    let mut checksum = 0.0;
    for i in 0..metrics {
        let readings = Readings {
            cpu: (i % 100) as f64,
            memory: 40.0,
            disk: 30.0,
            network: Some(Network {
                rx: 300.0,
                tx: (i % 7) as f64,
            }),
            extra: vec![],
        };
        // 1 ms apart: the 10 s window would hold 10 000 samples if the buffer allows.
        windows.add(i as f64, &readings);
        let summary = windows.summaries();
        checksum += summary.0[2].1.averages.map_or(0.0, |a| a.cpu);
    }
    println!(
        "capacity {capacity}: {metrics} metrics, {} buffered, checksum {checksum}",
        windows.len()
    );
}
