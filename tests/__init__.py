"""The test suite: mirrors pipeline/, study/ and analysis/ (a regular package, so that no installed
package that ships a top-level `tests` shadows it)."""
