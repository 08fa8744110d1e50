// OpenMPI's C API (Debian's libopenmpi-dev). Its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM,
// MPI_IN_PLACE) are macros over addresses of library globals, which Swift cannot import: these
// inline functions hand them over.
#include <mpi.h>

static inline MPI_Comm ddpm_mpi_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype ddpm_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype ddpm_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Op ddpm_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op ddpm_mpi_max(void) { return MPI_MAX; }
static inline void *ddpm_mpi_in_place(void) { return MPI_IN_PLACE; }
