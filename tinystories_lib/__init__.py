"""tinystories-lab: a thin library behind the TinyStories reproduction notebooks."""

__version__ = "0.1.0"
