"""`python -m skillbuild.fakevertex`: the fake Vertex AI server's command (it lives in skillbuild.testing)."""
from skillbuild.testing.fakevertex import *  # noqa: F401,F403
from skillbuild.testing.fakevertex import main

if __name__ == "__main__":
    raise SystemExit(main())
