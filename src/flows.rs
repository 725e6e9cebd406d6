//! Use cases shared by the portal's pages and the API: the rules and the
//! transaction of one action, whichever door it came through. A flow takes
//! the `App` and plain values (who acts, from where, on what) and returns a
//! result or a `PageError`, which each door renders its own way (a page or
//! a problem document).

pub mod sent;
