/* sandbox-agent-xfer — the archive helper of sandbox-agent (fop_xfer.c):
 * runs one upload or download for the agent, which keeps libarchive out of
 * its own address space. Not for people to run. */
#include "fop.h"

int main(int argc, char **argv)
{
    return fop_xfer_main(argc, argv);
}
