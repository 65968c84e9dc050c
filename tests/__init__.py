"""The tests, a package of their own: a dependency that installs a top-level `tests` package
(vision-datasets does) cannot shadow them."""
