//! Prints the absolute path of the test guest's ELF image, for scripts:
//! `cargo run -q -p frontends --bin guest-image`.

fn main() {
    println!("{}", frontends::TESTGUEST_ELF);
}
