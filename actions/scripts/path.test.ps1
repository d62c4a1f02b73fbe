# op: path.test
$DataB64 = '__FAILOVER_DATA__'
# --- prologue: identical in every template (tests/test_templates.py checks it) ---
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
function Get-Win32Code($Exception) {
    # The Win32 error behind an exception chain (0 when there is none).
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        if ($e -is [ComponentModel.Win32Exception]) {
            return $e.NativeErrorCode
        }
        if ($e -is [IO.IOException] -and ($e.HResult -band 0xFFFF0000) -eq 0x80070000) {
            return $e.HResult -band 0xFFFF
        }
    }
    return 0
}
function Get-ErrorChain($Exception) {
    # Every message of the chain: 'Cannot start service' alone hides the cause (1069, 1058, 1068).
    $messages = @()
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        $text = [string]$e.Message
        $code = Get-Win32Code $e
        if ($code -ne 0 -and $null -eq $e.InnerException) {
            $text = "$text (Win32 error $code)"
        }
        if ($messages -notcontains $text) {
            $messages += $text
        }
    }
    return ($messages -join ' <- ')
}
function Write-Failure($Exception) {
    @{ ok = $false; error = (Get-ErrorChain $Exception) } | ConvertTo-Json -Compress
    exit 1
}
# --- end of prologue ---
# --- helpers: paths (identical wherever used) ---
function Assert-AbsolutePath([string]$Path) {
    # IsPathRooted accepts C:foo, \foo and UNC paths; .NET resolves those against the process, not us.
    if ($Path -notmatch '^[A-Za-z]:\\' -or [IO.Path]::GetFullPath($Path) -ne $Path) {
        throw "not an absolute path: '$Path'"
    }
}
function Get-PathKind([string]$Path) {
    # Test-Path says $false on access denied; GetAttributes tells a missing path from a forbidden one.
    try {
        $attributes = [IO.File]::GetAttributes($Path)
    }
    catch [IO.FileNotFoundException], [IO.DirectoryNotFoundException] {
        return 'missing'
    }
    catch [UnauthorizedAccessException] {
        throw "access denied: ${Path}: $(Get-ErrorChain $_.Exception)"
    }
    if (($attributes -band [IO.FileAttributes]::Directory) -ne 0) {
        return 'folder'
    }
    return 'file'
}
# --- end of helpers: paths ---
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $path = [string]$Data.path
    Assert-AbsolutePath $path
    $kind = Get-PathKind $path
    [ordered]@{
        ok     = $true
        exists = $kind -ne 'missing'
        is_dir = $kind -eq 'folder'
    } | ConvertTo-Json -Compress
}
catch {
    Write-Failure $_.Exception
}
