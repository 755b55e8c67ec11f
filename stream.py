"""stream.py: not yet implemented (see the open issues in README.md's roadmap)."""
import sys

if __name__ == "__main__":
    print("error: stream.py is not implemented yet in this version of flashsync (the foundation only); "
          "see README.md 'Roadmap'", file=sys.stderr)
    sys.exit(2)
