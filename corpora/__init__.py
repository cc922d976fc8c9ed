"""The texts written for chargen and the catalogue of named public corpora, installed as the
package data of `chargen.corpora` (see pyproject.toml); no code lives here."""
