# op: file.read
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
# --- helpers: read (identical wherever used) ---
function Read-SharedBytes([string]$Path) {
    # Share read, write and delete: a running AccountServer keeps Settings.xml open for writing.
    $stream = [IO.File]::Open($Path, [IO.FileMode]::Open, [IO.FileAccess]::Read, [IO.FileShare]'ReadWrite, Delete')
    try {
        $bytes = New-Object byte[] $stream.Length
        $done = 0
        while ($done -lt $bytes.Length) {
            $n = $stream.Read($bytes, $done, $bytes.Length - $done)
            if ($n -le 0) {
                throw "short read of ${Path}: $done of $($bytes.Length) bytes"
            }
            $done += $n
        }
        return , $bytes
    }
    finally {
        $stream.Dispose()
    }
}
function Get-Sha256Hex([byte[]]$Bytes) {
    # Not Get-FileHash (a script function a policy can block) nor SHA256::Create() (throws under FIPS).
    $sha = New-Object Security.Cryptography.SHA256CryptoServiceProvider
    try {
        return ([BitConverter]::ToString($sha.ComputeHash($Bytes)) -replace '-', '').ToLowerInvariant()
    }
    finally {
        $sha.Dispose()
    }
}
# --- end of helpers: read ---
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $path = [string]$Data.path
    Assert-AbsolutePath $path
    $kind = Get-PathKind $path
    if ($kind -eq 'folder') {
        throw "not a file: $path is a folder"
    }
    $result = [ordered]@{ ok = $true; exists = $false; content_b64 = ''; sha256 = '' }
    if ($kind -eq 'file') {
        # The exact bytes: the BOM and the encoding stay as they are on disk.
        $bytes = Read-SharedBytes $path
        $result.exists = $true
        $result.content_b64 = [Convert]::ToBase64String($bytes)
        $result.sha256 = Get-Sha256Hex $bytes
    }
    $result | ConvertTo-Json -Compress
}
catch {
    Write-Failure $_.Exception
}
