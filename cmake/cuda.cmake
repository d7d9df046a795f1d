# CUDA detection. MOE_CUDA=AUTO compiles the CUDA sources whenever the toolkit is installed, even on a machine
# without a GPU (GPU tests then skip at run time). MOE_HAVE_CUDA is defined for C++ code when it is on.
set(MOE_HAVE_CUDA OFF)
if(NOT MOE_CUDA STREQUAL "OFF")
    if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
        set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
    endif()
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
        if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
            # One architecture keeps CI fast; scripts/test.sh picks "native" where a GPU is present.
            set(CMAKE_CUDA_ARCHITECTURES 90)
        endif()
        enable_language(CUDA)
        find_package(CUDAToolkit REQUIRED)
        # Nothing of CUDA is loaded at start-up, so a CPU-only run pays neither memory nor address space for it:
        # the CUDA runtime is linked statically (it opens the driver, libcuda, on the first CUDA call) and cuBLAS
        # is opened with dlopen when the first CUDA backend is made (runtime/backend_cuda.cpp).
        set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
        set(CMAKE_CUDA_STANDARD 17)  # CMake 3.25 does not know nvcc 13 accepts C++20; kernels need only 17
        set(CMAKE_CUDA_STANDARD_REQUIRED ON)
        set(MOE_HAVE_CUDA ON)
        message(STATUS "CUDA: on (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
    elseif(MOE_CUDA STREQUAL "ON")
        message(FATAL_ERROR "MOE_CUDA=ON but no CUDA compiler was found")
    else()
        message(STATUS "CUDA: off (no toolkit found)")
    endif()
endif()
