//! sqllogictest files (filled in below).
