//! Prints the worker's memoised `cc-option` make text (`oven::worker::ccoption::definition`),
//! for bench/ccoption.sh to pass to a raw `qmk compile`.

fn main() {
    println!("{}", oven::worker::ccoption::definition());
}
